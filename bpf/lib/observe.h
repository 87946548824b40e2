/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Observability: per-endpoint counters, per-rule hits and flow events. */
#ifndef MANX_OBSERVE_H
#define MANX_OBSERVE_H

#include <linux/pkt_cls.h>

#include "map_defs.h"
#include "parse.h"

/* Per-CPU values, so plain increments are exact. The daemon creates the
 * entry with the endpoint; a missing one (ifindex 0 for unknown endpoints
 * included) is simply not counted. */
static __always_inline struct manx_counters *manx_counters_of(__u32 ifindex, __u32 dir)
{
	struct manx_counters_key k = { .ifindex = ifindex, .direction = dir };

	return bpf_map_lookup_elem(&manx_counters, &k);
}

static __always_inline void manx_count_in(struct manx_counters *c, __u32 counter, __u32 bytes)
{
	if (!c || counter >= MANX_CNT_MAX)
		return;
	c->value[counter]++;
	if (bytes)
		c->value[MANX_CNT_BYTES] += bytes;
}

static __always_inline void manx_count(__u32 ifindex, __u32 dir, __u32 counter, __u32 bytes)
{
	manx_count_in(manx_counters_of(ifindex, dir), counter, bytes);
}

static __always_inline void manx_rule_hit(__u32 rule_id)
{
	struct manx_rule_hits *h = bpf_map_lookup_elem(&manx_rule_hits, &rule_id);

	if (h) {
		h->packets++;
		return;
	}
	struct manx_rule_hits first = { .packets = 1 };
	bpf_map_update_elem(&manx_rule_hits, &rule_id, &first, BPF_NOEXIST);
}

/* Whether the endpoint (its counters, `c`) may send one more flow event
 * now (see MANX_EVENTS_PER_WINDOW); a refused one is counted. An endpoint
 * without counters (unknown to the daemon) sends none: nothing bounds it. */
static __always_inline int manx_event_budget(struct manx_counters *c)
{
	if (!c)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (now - c->events_window_start >= MANX_EVENTS_WINDOW_NS) {
		c->events_window_start = now;
		c->events_sent = 0;
	}
	if (c->events_sent >= MANX_EVENTS_PER_WINDOW) {
		c->value[MANX_CNT_EVENT_RATE_LIMITED]++;
		return 0;
	}
	c->events_sent++;
	return 1;
}

/* A flow event for the endpoint whose counters are `c`, within its budget. */
static __always_inline void manx_flow_event_in(struct manx_counters *c, __u32 ifindex, __u32 dir, const struct manx_pkt *p,
					       __u32 identity, __u32 rule_id, __u8 verdict, __u8 reason)
{
	if (!manx_event_budget(c))
		return; /* the counters still record the decision */
	struct manx_flow_event *e = bpf_ringbuf_reserve(&manx_events, sizeof(*e), 0);

	if (!e) {
		c->value[MANX_CNT_EVENT_RING_FULL]++;
		return;
	}
	e->timestamp_ns = bpf_ktime_get_ns();
	e->ifindex = ifindex;
	e->rule_id = rule_id;
	e->saddr = p->saddr;
	e->daddr = p->daddr;
	e->sport = p->sport;
	e->dport = p->dport;
	e->peer_identity = identity;
	e->proto = p->proto;
	e->direction = dir;
	e->verdict = verdict;
	e->reason = reason;
	bpf_ringbuf_submit(e, 0);
}

/* A drop that is reported: counted, and an event within the budget, with
 * one lookup of the endpoint's counters for both. */
static __always_inline int manx_drop_reported(__u32 ifindex, __u32 dir, const struct manx_pkt *p,
					      __u32 identity, __u32 rule_id, __u32 reason)
{
	struct manx_counters *c = manx_counters_of(ifindex, dir);

	manx_count_in(c, reason, 0);
	manx_flow_event_in(c, ifindex, dir, p, identity, rule_id, MANX_VERDICT_DENY, reason);
	return TC_ACT_SHOT;
}

#endif
