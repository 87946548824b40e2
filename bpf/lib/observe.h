/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Observability: per-endpoint counters, per-rule hits and flow events. */
#ifndef MANX_OBSERVE_H
#define MANX_OBSERVE_H

#include "map_defs.h"
#include "parse.h"

/* Per-CPU values, so plain increments are exact. The daemon creates the
 * entry with the endpoint; a missing one (ifindex 0 for unknown endpoints
 * included) is simply not counted. */
static __always_inline void manx_count(__u32 ifindex, __u32 dir, __u32 counter, __u32 bytes)
{
	struct manx_counters_key k = { .ifindex = ifindex, .direction = dir };
	struct manx_counters *c = bpf_map_lookup_elem(&manx_counters, &k);

	if (!c || counter >= MANX_CNT_MAX)
		return;
	c->value[counter]++;
	if (bytes)
		c->value[MANX_CNT_BYTES] += bytes;
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

/* Whether the endpoint may send one more flow event now (see
 * MANX_EVENTS_PER_WINDOW); a refused one is counted. An endpoint without
 * counters (unknown to the daemon) sends none: nothing bounds it. */
static __always_inline int manx_event_budget(__u32 ifindex, __u32 dir)
{
	struct manx_counters_key k = { .ifindex = ifindex, .direction = dir };
	struct manx_counters *c = bpf_map_lookup_elem(&manx_counters, &k);
	__u64 now = bpf_ktime_get_ns();

	if (!c)
		return 0;
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

static __always_inline void manx_flow_event(__u32 ifindex, __u32 dir, const struct manx_pkt *p,
					    __u32 identity, __u32 rule_id, __u8 verdict, __u8 reason)
{
	if (!manx_event_budget(ifindex, dir))
		return; /* the counters still record the decision */
	struct manx_flow_event *e = bpf_ringbuf_reserve(&manx_events, sizeof(*e), 0);

	if (!e) {
		manx_count(ifindex, dir, MANX_CNT_EVENT_RING_FULL, 0);
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

#endif
