/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv4 fragments follow their datagram's verdict (layout and rationale:
 * manx_frags in include/manx/maps.h). The first fragment is decided like
 * any packet, on its ports; later ones by what it left here. */
#ifndef MANX_FRAGMENTS_H
#define MANX_FRAGMENTS_H

#include "map_defs.h"
#include "parse.h"

#define MANX_FRAG_TIMEOUT_NS (30ULL * 1000000000ULL) /* the kernel's ipfrag_time */

static __always_inline void manx_frag_key(const struct manx_endpoint *ep, __u32 dir, const struct manx_pkt *p,
					  struct manx_frag_key *k)
{
	k->endpoint = ep->id;
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->ip_id = p->ip_id;
	k->proto = p->proto;
	k->direction = dir;
}

/* 0, or the drop reason of a first fragment: it must hold its whole L4
 * header (RFC 1858's tiny fragments would hide the ports), and be the only
 * first fragment of its datagram (a second one could carry other ports). */
static __always_inline __u32 manx_first_fragment_check(const struct manx_endpoint *ep, __u32 dir,
							const struct manx_pkt *p)
{
	struct manx_frag_key k;

	if (p->ip_payload < p->l4_len)
		return MANX_CNT_DROP_FRAG_TINY;
	manx_frag_key(ep, dir, p, &k);
	if (bpf_map_lookup_elem(&manx_frags, &k))
		return MANX_CNT_DROP_FRAG_OVERLAP;
	return 0;
}

/* The first fragment passed under this rule set: its datagram may follow. */
static __always_inline void manx_frag_record(const struct manx_endpoint *ep, __u32 dir, const struct manx_pkt *p,
					     __u32 ruleset, bool egress, __u64 now)
{
	struct manx_frag_key k;
	struct manx_frag_value v = {
		.first_seen_ns = now,
		.ruleset = ruleset,
		.sport = p->sport,
		.dport = p->dport,
		.l4_len = p->l4_len,
		.egress = egress,
	};

	manx_frag_key(ep, dir, p, &k);
	bpf_map_update_elem(&manx_frags, &k, &v, BPF_NOEXIST);
}

/* 0 when a later fragment belongs to a datagram that passed under a rule
 * set still in force for its flow's direction, else the drop reason. */
static __always_inline __u32 manx_later_fragment_check(const struct manx_endpoint *ep,
							const struct manx_ep_policy *pol, __u32 dir,
							struct manx_pkt *p, __u64 now)
{
	struct manx_frag_key k;

	manx_frag_key(ep, dir, p, &k);
	struct manx_frag_value *v = bpf_map_lookup_elem(&manx_frags, &k);
	if (!v || (__s64)(now - v->first_seen_ns) > (__s64)MANX_FRAG_TIMEOUT_NS)
		return MANX_CNT_DROP_FRAGMENT;
	if (p->frag_offset < v->l4_len)
		return MANX_CNT_DROP_FRAG_OVERLAP;
	if (v->ruleset != (v->egress ? pol->egress_ruleset : pol->ingress_ruleset) && v->ruleset != MANX_RULESET_NODE)
		return MANX_CNT_DROP_FRAGMENT;
	p->sport = v->sport; /* for flow events and forwarding */
	p->dport = v->dport;
	return 0;
}

#endif
