/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Conntrack: each endpoint keeps its flows in a table of its own (layout
 * and rationale: manx_ct in include/manx/maps.h). Only the first packet of
 * a flow pays for the policy lookup; later packets only touch the entry. */
#ifndef MANX_CONNTRACK_H
#define MANX_CONNTRACK_H

#include "map_defs.h"
#include "parse.h"

#define MANX_NSEC 1000000000ULL

/* The endpoint's table, or NULL when the daemon has not (or no longer)
 * set it up: the caller fails closed. */
static __always_inline void *manx_ct_table(const struct manx_endpoint *ep)
{
	__u32 id = ep->id;
	return bpf_map_lookup_elem(&manx_ct, &id);
}

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
	k->query = p->query;
	k->pad[0] = k->pad[1] = 0;
	return src_is_a;
}

static __always_inline bool manx_ct_tcp_closed(__u32 flags)
{
	return (flags & MANX_CT_F_RST) || ((flags & MANX_CT_F_FIN_ORIG) && (flags & MANX_CT_F_FIN_REPLY));
}

static __always_inline __s64 manx_ct_timeout_ns(__u32 flags, __u8 proto)
{
	if (proto == IPPROTO_TCP) {
		if (manx_ct_tcp_closed(flags))
			return MANX_CT_TIMEOUT_TCP_CLOSED * MANX_NSEC;
		if (!(flags & MANX_CT_F_SEEN_REPLY))
			return MANX_CT_TIMEOUT_TCP_SYN * MANX_NSEC;
		return MANX_CT_TIMEOUT_TCP_EST * MANX_NSEC;
	}
	if (proto == IPPROTO_UDP)
		return (flags & MANX_CT_F_SEEN_REPLY ? MANX_CT_TIMEOUT_UDP : MANX_CT_TIMEOUT_UDP_UNREPLIED) * MANX_NSEC;
	return MANX_CT_TIMEOUT_OTHER * MANX_NSEC;
}

/* A live entry for the packet, or NULL when the flow is new: never seen,
 * idle past its timeout, or a closed TCP flow whose ports are being reused.
 * The idle time is signed: another CPU may have stamped last_seen after
 * this one read the clock. */
static __always_inline struct manx_ct_value *
manx_ct_lookup(void *table, const struct manx_ct_key *k, const struct manx_pkt *p, __u64 now)
{
	struct manx_ct_value *v = bpf_map_lookup_elem(table, k);

	if (!v)
		return NULL;
	__u32 flags = v->flags;
	if ((__s64)(now - v->last_seen_ns) > manx_ct_timeout_ns(flags, p->proto))
		return NULL;
	if (p->proto == IPPROTO_TCP && manx_ct_tcp_closed(flags) &&
	    (p->tcp_flags & (MANX_TCP_SYN | MANX_TCP_ACK)) == MANX_TCP_SYN)
		return NULL;
	return v;
}

/* State flags a packet adds: only written (atomically, since other CPUs
 * update the same entry) when one is new, so the established path does no
 * locked instruction. Statistics are plain increments: approximate under
 * contention, which is fine for diagnostics. */
static __always_inline void manx_ct_touch(struct manx_ct_value *v, const struct manx_pkt *p,
					  bool is_orig, __u64 now)
{
	__u32 add = 0;

	if (!is_orig)
		add |= MANX_CT_F_SEEN_REPLY;
	if (p->tcp_flags & MANX_TCP_FIN)
		add |= is_orig ? MANX_CT_F_FIN_ORIG : MANX_CT_F_FIN_REPLY;
	if (p->tcp_flags & MANX_TCP_RST)
		add |= MANX_CT_F_RST;
	if (add & ~v->flags)
		__sync_fetch_and_or(&v->flags, add);
	v->last_seen_ns = now;
	v->packets++;
	v->bytes += p->len;
}

/* Whether an entry the node rule approved carries this packet: the node's
 * own packets (never a copy from elsewhere with its address) and the pod's
 * replies to them. */
static __always_inline bool manx_ct_node_flow(const struct manx_ct_value *v, bool is_orig, bool from_node)
{
	return (v->flags & MANX_CT_F_FROM_NODE) && (from_node || !is_orig);
}

/* Notes that a flow with `peer` is about to be approved by `ruleset`
 * (manx_ct_peers in maps.h). Only approvals that revocation may take back
 * count: not "allow all" (no policy: nothing to revoke) nor a reserved
 * value; an entry later approved by a real rule set is noted then. A peer
 * already there costs one lookup; a new one that does not fit is
 * counted, so the daemon stops trusting the map. */
static __always_inline void manx_ct_note_peer(__be32 peer, __u32 ruleset)
{
	if (ruleset == MANX_RULESET_ALLOW_ALL || ruleset >= MANX_RULESET_RESERVED)
		return;
	if (bpf_map_lookup_elem(&manx_ct_peers, &peer))
		return;
	__u32 one = 1;
	/* Another CPU may add it meanwhile: only its absence counts. */
	if (bpf_map_update_elem(&manx_ct_peers, &peer, &one, BPF_NOEXIST) == 0 ||
	    bpf_map_lookup_elem(&manx_ct_peers, &peer))
		return;
	__u32 zero = 0;
	__u64 *missed = bpf_map_lookup_elem(&manx_ct_peers_missed, &zero);
	if (missed)
		__sync_fetch_and_add(missed, 1);
}

/* Records a new flow of the endpoint; false when its table is full (its
 * budget is used up): the caller drops the packet. An expired entry with
 * the same key is replaced in place, which needs no room. `peer` is the
 * far end of the flow (see manx_ct_note_peer). The endpoint's
 * manx_ct_live mark is set after the entry exists (see maps.h), and
 * written only when clear: new flows only, no shared cache line dirtied. */
static __always_inline bool manx_ct_create(void *table, __u32 endpoint_id, __be32 peer, const struct manx_ct_key *k,
					   const struct manx_pkt *p, bool src_is_a, __u32 flags, __u32 ruleset,
					   __u32 rule_id, __u64 now)
{
	struct manx_ct_value v = {
		.created_ns = now,
		.last_seen_ns = now,
		.packets = 1,
		.bytes = p->len,
		.ruleset = ruleset,
		.rule_id = rule_id,
		.policy_port = p->policy_port,
		.flags = flags | (src_is_a ? MANX_CT_F_ORIG_IS_A : 0),
	};

	if (p->tcp_flags & MANX_TCP_FIN)
		v.flags |= MANX_CT_F_FIN_ORIG;
	if (p->tcp_flags & MANX_TCP_RST)
		v.flags |= MANX_CT_F_RST;
	/* Before the entry exists: whoever finds the entry finds its peer noted. */
	manx_ct_note_peer(peer, ruleset);
	if (bpf_map_update_elem(table, k, &v, BPF_ANY) != 0)
		return false;
	__u32 *live = bpf_map_lookup_elem(&manx_ct_live, &endpoint_id);
	if (live && !*live)
		*live = 1;
	return true;
}

#endif
