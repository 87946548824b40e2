/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Workload endpoint programs, attached with tc on the host side of each
 * pod's veth. Host ingress carries the pod's egress policy; host egress
 * carries its ingress policy.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "map_defs.h"
#include "parse.h"
#include "conntrack.h"
#include "policy.h"
#include "observe.h"
#include "encap.h"
#include "fragments.h"

static __always_inline int manx_drop(__u32 ifindex, __u32 dir, __u32 reason)
{
	manx_count(ifindex, dir, reason, 0);
	return TC_ACT_SHOT;
}

/* 0, or the drop reason of a packet whose workload-side address is not the
 * endpoint's. */
static __always_inline __u32 manx_check_binding(const struct manx_endpoint *ep, __u32 dir, const struct manx_pkt *pkt)
{
	if (dir == MANX_DIR_EGRESS)
		return pkt->saddr == ep->addr ? 0 : MANX_CNT_DROP_SPOOFED_SOURCE;
	return pkt->daddr == ep->addr ? 0 : MANX_CNT_DROP_WRONG_DEST;
}

static __always_inline bool manx_is_tunnel(const struct manx_pkt *pkt)
{
	return pkt->proto == IPPROTO_IPIP || (pkt->proto == IPPROTO_UDP && pkt->dport == bpf_htons(MANX_VXLAN_PORT));
}

/* An allowed packet from the workload may be bound for another node. */
static __always_inline int manx_allowed(struct __sk_buff *skb, __u32 dir, const struct manx_pkt *pkt)
{
	return dir == MANX_DIR_EGRESS ? manx_forward(skb, pkt) : TC_ACT_OK;
}

/* An ICMP error passes exactly when the packet it quotes belongs to a live
 * flow of this endpoint's, in the direction that makes sense: the endpoint
 * sent the quoted packet when it receives the error (fragmentation needed
 * on its way out, say), and received it when it sends the error (port
 * unreachable). Policy has no say: as in Calico, it only opens flows. */
static __always_inline int manx_icmp_error(struct __sk_buff *skb, const struct manx_endpoint *ep, void *table,
					   __u32 dir, const struct manx_pkt *pkt, __u64 now)
{
	__u32 ifindex = skb->ifindex;
	struct manx_pkt quoted;
	struct manx_ct_key key;

	if (!manx_parse_quote(skb, pkt, &quoted) ||
	    (dir == MANX_DIR_INGRESS ? quoted.saddr : quoted.daddr) != ep->addr)
		goto unrelated;
	manx_ct_key(&quoted, &key);
	if (!manx_ct_lookup(table, &key, &quoted, now))
		goto unrelated;
	manx_count(ifindex, dir, MANX_CNT_ALLOW_RELATED, pkt->len);
	return manx_allowed(skb, dir, pkt);
unrelated:
	return manx_drop_reported(ifindex, dir, pkt, MANX_IDENTITY_UNKNOWN, MANX_RULE_NONE, MANX_CNT_DROP_ICMP_UNRELATED);
}

static __always_inline int manx_workload(struct __sk_buff *skb, __u32 dir)
{
	__u32 ifindex = skb->ifindex;
	struct manx_endpoint *ep = bpf_map_lookup_elem(&manx_endpoints, &ifindex);

	if (!ep)
		return manx_drop(0, dir, MANX_CNT_DROP_NO_ENDPOINT); /* fail closed */
	__u32 gen;
	const struct manx_ep_policy *pol = manx_policy_slot(ep, &gen);
	if (!pol)
		return manx_drop(ifindex, dir, MANX_CNT_DROP_NO_ENDPOINT);

	struct manx_pkt pkt;
	int parsed = manx_parse(skb, &pkt);
	switch (parsed) {
	case MANX_PARSE_OK:
	case MANX_PARSE_FRAGMENT:
		break;
	case MANX_PARSE_ARP: /* the pod must reach its gateway */
		manx_count(ifindex, dir, MANX_CNT_ALLOW_ARP, skb->len);
		return TC_ACT_OK;
	case MANX_PARSE_VLAN:
		return manx_drop(ifindex, dir, MANX_CNT_DROP_VLAN);
	case MANX_PARSE_NON_IP:
		return manx_drop(ifindex, dir, MANX_CNT_DROP_NON_IP);
	case MANX_PARSE_IPV6:
		return manx_drop(ifindex, dir, MANX_CNT_DROP_IPV6);
	default:
		return manx_drop(ifindex, dir, MANX_CNT_DROP_MALFORMED);
	}

	/* The endpoint's address is bound to it: a workload sends only from
	 * it and receives only for it. Checked before conntrack is read or
	 * written, so a forged packet can neither create nor refresh a flow,
	 * and the peer identity policy sees is never one the sender made up. */
	__u32 binding = manx_check_binding(ep, dir, &pkt);
	if (binding)
		return manx_drop_reported(ifindex, dir, &pkt, MANX_IDENTITY_UNKNOWN, MANX_RULE_NONE, binding);
	__u64 now = bpf_ktime_get_ns();
	if (pkt.frag == MANX_FRAG_LATER) {
		__u32 reason = manx_later_fragment_check(ep, pol, dir, &pkt, now);
		if (reason)
			return manx_drop(ifindex, dir, reason);
		manx_count(ifindex, dir, MANX_CNT_ALLOW_FRAGMENT, pkt.len);
		return manx_allowed(skb, dir, &pkt);
	}
	if (pkt.frag == MANX_FRAG_FIRST) {
		__u32 reason = manx_first_fragment_check(ep, dir, &pkt);
		if (reason)
			return manx_drop(ifindex, dir, reason);
	}
	/* A workload that builds tunnel packets could have another node
	 * decapsulate them as if they came from this node: Calico drops them
	 * at the workload too. */
	if (dir == MANX_DIR_EGRESS && manx_is_tunnel(&pkt))
		return manx_drop(ifindex, dir, MANX_CNT_DROP_TUNNEL);

	/* Kubernetes' node rule: what this node itself sends to its pods is
	 * always allowed (kubelet's probes). Known by how the packet entered:
	 * a locally generated packet never arrived on an interface. Never by
	 * its source address, which anything on the underlay can write. */
	bool from_node = dir == MANX_DIR_INGRESS && skb->ingress_ifindex == 0;

	void *table = manx_ct_table(ep);
	if (!table)
		return manx_drop(ifindex, dir, MANX_CNT_DROP_NO_ENDPOINT); /* fail closed */
	if (pkt.icmp == MANX_ICMP_ERROR)
		return manx_icmp_error(skb, ep, table, dir, &pkt, now);

	/* ICMP queries are flows (type and identifier in the key); any other
	 * non-error ICMP message is judged alone, by its own type and code. */
	bool stateless = pkt.icmp == MANX_ICMP_OTHER;
	struct manx_ct_key key;
	bool src_is_a = manx_ct_key(&pkt, &key);
	struct manx_ct_value *ct = stateless ? NULL : manx_ct_lookup(table, &key, &pkt, now);

	/* The endpoint originated the flow when it sends an original-direction
	 * packet or receives a reply: its egress policy governs, else its
	 * ingress policy. A packet whose role contradicts the entry's is a new
	 * flow: it never takes the fast path on the entry. */
	bool endpoint_sent = dir == MANX_DIR_EGRESS;
	bool is_orig = !ct || src_is_a == !!(ct->flags & MANX_CT_F_ORIG_IS_A);
	bool endpoint_originated = endpoint_sent == is_orig;
	if (ct && endpoint_originated != !!(ct->flags & MANX_CT_F_EP_ORIGINATED)) {
		ct = NULL;
		is_orig = true;
		endpoint_originated = endpoint_sent;
	}
	/* An ICMP query reply passes only as the reply of its request's flow,
	 * and a request only in the direction that opened it. Otherwise the
	 * message is judged alone and opens nothing. */
	if (pkt.icmp == MANX_ICMP_REPLY || pkt.icmp == MANX_ICMP_REQUEST) {
		bool want_orig = pkt.icmp == MANX_ICMP_REQUEST;
		if (ct ? is_orig != want_orig : !want_orig) {
			ct = NULL;
			stateless = true;
			is_orig = true;
			endpoint_originated = endpoint_sent;
		}
	}
	__u32 ruleset = endpoint_originated ? pol->egress_ruleset : pol->ingress_ruleset;

	/* Fast path: approved by the rule set still in force, or a flow the
	 * node opened. */
	if (ct && (ct->ruleset == ruleset || manx_ct_node_flow(ct, is_orig, from_node))) {
		manx_ct_touch(ct, &pkt, is_orig, now);
		manx_count(ifindex, dir, MANX_CNT_ALLOW_CT, pkt.len);
		if (pkt.frag == MANX_FRAG_FIRST)
			manx_frag_record(ep, dir, &pkt, ct->ruleset, endpoint_originated, now);
		return manx_allowed(skb, dir, &pkt);
	}

	/* Slow path: policy on the flow's original tuple. The peer is the other
	 * end of the packet; the port is the one the originator asked for. A
	 * flow the node opens needs no policy; one the pod opened to the node
	 * stays under the pod's egress policy, as in Calico. */
	bool node_opened = from_node && !endpoint_originated;
	__be32 peer = endpoint_sent ? pkt.daddr : pkt.saddr;
	__be16 port = ct ? ct->policy_port : pkt.policy_port;
	struct manx_decision d = { .verdict = MANX_VERDICT_ALLOW, .rule_id = MANX_RULE_NODE };
	if (!node_opened)
		manx_decide(gen, ruleset, peer, pkt.proto, port, &d);

	if (d.verdict != MANX_VERDICT_ALLOW) {
		__u32 reason = d.rule_id == MANX_RULE_DEFAULT_DENY || (d.flags & MANX_POL_F_DEFAULT)
				       ? MANX_CNT_DROP_DEFAULT
				       : MANX_CNT_DROP_POLICY;
		if (d.rule_id >= MANX_RULE_FIRST)
			manx_rule_hit(d.rule_id);
		return manx_drop_reported(ifindex, dir, &pkt, d.identity, d.rule_id, reason);
	}

	__u32 approved = node_opened ? MANX_RULESET_NODE : ruleset;
	if (stateless) {
		/* nothing to record */
	} else if (ct) {
		/* Before the approval shows: revocation must find its peer noted. */
		manx_ct_note_peer(peer, approved);
		ct->ruleset = approved;
		ct->rule_id = d.rule_id;
		if (node_opened && !(ct->flags & MANX_CT_F_FROM_NODE))
			__sync_fetch_and_or(&ct->flags, MANX_CT_F_FROM_NODE);
		manx_ct_touch(ct, &pkt, is_orig, now);
	} else if (!manx_ct_create(table, ep->id, peer, &key, &pkt, src_is_a,
				   (endpoint_originated ? MANX_CT_F_EP_ORIGINATED : 0) | (node_opened ? MANX_CT_F_FROM_NODE : 0),
				   approved, d.rule_id, now)) {
		/* Untracked, its replies would be judged as new flows: refuse it. */
		return manx_drop_reported(ifindex, dir, &pkt, d.identity, d.rule_id, MANX_CNT_DROP_CT_FULL);
	}
	if (d.rule_id >= MANX_RULE_FIRST)
		manx_rule_hit(d.rule_id);
	struct manx_counters *counters = manx_counters_of(ifindex, dir);
	if ((ep->flags & MANX_EP_F_LOG_ALLOWED) || (d.flags & MANX_POL_F_LOG))
		manx_flow_event_in(counters, ifindex, dir, &pkt, d.identity, d.rule_id, d.verdict, MANX_CNT_ALLOW_NEW);
	manx_count_in(counters, node_opened ? MANX_CNT_ALLOW_NODE : MANX_CNT_ALLOW_NEW, pkt.len);
	if (pkt.frag == MANX_FRAG_FIRST)
		manx_frag_record(ep, dir, &pkt, approved, endpoint_originated, now);
	return manx_allowed(skb, dir, &pkt);
}

/* Host-side ingress: packets the workload sends (its egress policy). */
SEC("tc")
int manx_from_workload(struct __sk_buff *skb)
{
	return manx_workload(skb, MANX_DIR_EGRESS);
}

/* Host-side egress: packets delivered to the workload (its ingress policy). */
SEC("tc")
int manx_to_workload(struct __sk_buff *skb)
{
	return manx_workload(skb, MANX_DIR_INGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
