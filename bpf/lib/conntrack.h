/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Conntrack: one LRU entry per flow, shared by both directions and by both
 * endpoints of a node-local flow. Only the first packet of a flow (per leg)
 * pays for the policy lookup; later packets only touch this entry. */
#ifndef MANX_CONNTRACK_H
#define MANX_CONNTRACK_H

#include "map_defs.h"
#include "parse.h"

#define MANX_NSEC 1000000000ULL

/* Builds the normalised key; returns true when the packet's source is "a". */
static __always_inline bool manx_ct_key(const struct manx_pkt *p, struct manx_ct_key *k)
{
	/* Any total order works as long as both directions agree on it. */
	bool src_is_a = p->saddr < p->daddr || (p->saddr == p->daddr && p->sport <= p->dport);

	k->addr_a = src_is_a ? p->saddr : p->daddr;
	k->addr_b = src_is_a ? p->daddr : p->saddr;
	k->port_a = src_is_a ? p->sport : p->dport;
	k->port_b = src_is_a ? p->dport : p->sport;
	k->proto = p->proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
	return src_is_a;
}

static __always_inline bool manx_ct_tcp_closed(const struct manx_ct_value *v)
{
	return (v->flags & MANX_CT_F_RST) ||
	       ((v->flags & MANX_CT_F_FIN_ORIG) && (v->flags & MANX_CT_F_FIN_REPLY));
}

static __always_inline __u64 manx_ct_timeout_ns(const struct manx_ct_value *v, __u8 proto)
{
	if (proto == IPPROTO_TCP) {
		if (manx_ct_tcp_closed(v))
			return MANX_CT_TIMEOUT_TCP_CLOSED * MANX_NSEC;
		if (!(v->flags & MANX_CT_F_SEEN_REPLY))
			return MANX_CT_TIMEOUT_TCP_SYN * MANX_NSEC;
		return MANX_CT_TIMEOUT_TCP_EST * MANX_NSEC;
	}
	if (proto == IPPROTO_UDP)
		return MANX_CT_TIMEOUT_UDP * MANX_NSEC;
	return MANX_CT_TIMEOUT_OTHER * MANX_NSEC;
}

/* A live entry for the packet, or NULL when the flow is new: never seen,
 * idle past its timeout, or a closed TCP flow whose ports are being reused. */
static __always_inline struct manx_ct_value *
manx_ct_lookup(const struct manx_ct_key *k, const struct manx_pkt *p, __u64 now)
{
	struct manx_ct_value *v = bpf_map_lookup_elem(&manx_ct, k);

	if (!v)
		return NULL;
	if (now - v->last_seen_ns > manx_ct_timeout_ns(v, p->proto))
		return NULL;
	if (p->proto == IPPROTO_TCP && manx_ct_tcp_closed(v) &&
	    (p->tcp_flags & (MANX_TCP_SYN | MANX_TCP_ACK)) == MANX_TCP_SYN)
		return NULL;
	return v;
}

static __always_inline bool manx_ct_approved(const struct manx_ct_value *v, __u32 leg, __u32 ruleset)
{
	/* Branches, not v->approved_ruleset[leg]: clang turns the index into
	 * pointer arithmetic the verifier rejects. */
	if (leg == MANX_CT_LEG_SRC)
		return (v->flags & MANX_CT_F_APPROVED_SRC) && v->approved_ruleset[0] == ruleset;
	return (v->flags & MANX_CT_F_APPROVED_DST) && v->approved_ruleset[1] == ruleset;
}

/* Per-packet bookkeeping. Plain (non-atomic) increments: the statistics are
 * approximate under contention, which is fine for diagnostics and keeps the
 * established path free of locked instructions. */
static __always_inline void manx_ct_touch(struct manx_ct_value *v, const struct manx_pkt *p,
					  bool is_orig, __u64 now)
{
	__u8 flags = v->flags;

	if (!is_orig)
		flags |= MANX_CT_F_SEEN_REPLY;
	if (p->tcp_flags & MANX_TCP_FIN)
		flags |= is_orig ? MANX_CT_F_FIN_ORIG : MANX_CT_F_FIN_REPLY;
	if (p->tcp_flags & MANX_TCP_RST)
		flags |= MANX_CT_F_RST;
	if (flags != v->flags)
		v->flags = flags;
	v->last_seen_ns = now;
	v->packets++;
	v->bytes += p->len;
}

static __always_inline void manx_ct_approve(struct manx_ct_value *v, __u32 leg, __u32 ruleset, __u32 rule_id)
{
	if (leg == MANX_CT_LEG_SRC) {
		v->approved_ruleset[0] = ruleset;
		v->rule_id[0] = rule_id;
		v->flags |= MANX_CT_F_APPROVED_SRC;
	} else {
		v->approved_ruleset[1] = ruleset;
		v->rule_id[1] = rule_id;
		v->flags |= MANX_CT_F_APPROVED_DST;
	}
}

static __always_inline void manx_ct_create(const struct manx_ct_key *k, const struct manx_pkt *p,
					   bool src_is_a, __u32 leg, __u32 ruleset, __u32 rule_id,
					   __u64 now)
{
	struct manx_ct_value v = {
		.created_ns = now,
		.last_seen_ns = now,
		.packets = 1,
		.bytes = p->len,
		.policy_port = p->policy_port,
		.flags = src_is_a ? MANX_CT_F_ORIG_IS_A : 0,
	};

	if (p->tcp_flags & MANX_TCP_FIN)
		v.flags |= MANX_CT_F_FIN_ORIG;
	if (p->tcp_flags & MANX_TCP_RST)
		v.flags |= MANX_CT_F_RST;
	manx_ct_approve(&v, leg, ruleset, rule_id);
	bpf_map_update_elem(&manx_ct, k, &v, BPF_ANY);
}

#endif
