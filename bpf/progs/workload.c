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

static __always_inline int manx_drop(__u32 ifindex, __u32 dir, __u32 reason)
{
	manx_count(ifindex, dir, reason, 0);
	return TC_ACT_SHOT;
}

/* An allowed packet from the workload may be bound for another node. */
static __always_inline int manx_allowed(struct __sk_buff *skb, __u32 dir, const struct manx_pkt *pkt)
{
	return dir == MANX_DIR_EGRESS ? manx_forward(skb, pkt) : TC_ACT_OK;
}

static __always_inline int manx_workload(struct __sk_buff *skb, __u32 dir)
{
	__u32 ifindex = skb->ifindex;
	struct manx_endpoint *ep = bpf_map_lookup_elem(&manx_endpoints, &ifindex);

	if (!ep)
		return manx_drop(0, dir, MANX_CNT_DROP_NO_ENDPOINT); /* fail closed */

	struct manx_pkt pkt;
	switch (manx_parse(skb, &pkt)) {
	case MANX_PARSE_OK:
		break;
	case MANX_PARSE_NON_IP: /* ARP must work for the pod to reach its gateway */
		manx_count(ifindex, dir, MANX_CNT_ALLOW_NON_IP, skb->len);
		return TC_ACT_OK;
	case MANX_PARSE_IPV6:
		return manx_drop(ifindex, dir, MANX_CNT_DROP_IPV6);
	case MANX_PARSE_FRAGMENT:
		return manx_drop(ifindex, dir, MANX_CNT_DROP_FRAGMENT);
	default:
		return manx_drop(ifindex, dir, MANX_CNT_DROP_MALFORMED);
	}

	__u64 now = bpf_ktime_get_ns();
	struct manx_ct_key key;
	bool src_is_a = manx_ct_key(&pkt, &key);
	struct manx_ct_value *ct = manx_ct_lookup(&key, &pkt, now);
	bool is_orig = !ct || src_is_a == !!(ct->flags & MANX_CT_F_ORIG_IS_A);

	/* Which leg of the flow does this hook police? The endpoint originated
	 * the flow when it sends an original-direction packet or receives a
	 * reply; then its egress policy owns the leg, else its ingress policy. */
	bool endpoint_sent = dir == MANX_DIR_EGRESS;
	bool endpoint_originated = endpoint_sent == is_orig;
	__u32 leg = endpoint_originated ? MANX_CT_LEG_SRC : MANX_CT_LEG_DST;
	__u32 ruleset = endpoint_originated ? ep->egress_ruleset : ep->ingress_ruleset;

	/* Fast path: the leg was approved by the rule set still in force. */
	if (ct && manx_ct_approved(ct, leg, ruleset)) {
		manx_ct_touch(ct, &pkt, is_orig, now);
		manx_count(ifindex, dir, MANX_CNT_ALLOW_CT, pkt.len);
		return manx_allowed(skb, dir, &pkt);
	}

	/* Slow path: policy on the flow's original tuple. The peer is the other
	 * end of the packet; the port is the one the originator asked for. */
	__be32 peer = endpoint_sent ? pkt.daddr : pkt.saddr;
	__be16 port = ct ? ct->policy_port : pkt.policy_port;
	struct manx_decision d;
	manx_decide(ruleset, peer, pkt.proto, port, &d);

	if (d.verdict != MANX_VERDICT_ALLOW) {
		__u32 reason = d.rule_id == MANX_RULE_DEFAULT_DENY || (d.flags & MANX_POL_F_DEFAULT)
				       ? MANX_CNT_DROP_DEFAULT
				       : MANX_CNT_DROP_POLICY;
		if (d.rule_id >= MANX_RULE_FIRST)
			manx_rule_hit(d.rule_id);
		manx_flow_event(ifindex, dir, &pkt, d.identity, d.rule_id, d.verdict, reason);
		return manx_drop(ifindex, dir, reason);
	}

	if (ct) {
		manx_ct_approve(ct, leg, ruleset, d.rule_id);
		manx_ct_touch(ct, &pkt, is_orig, now);
	} else {
		manx_ct_create(&key, &pkt, src_is_a, leg, ruleset, d.rule_id, now);
	}
	if (d.rule_id >= MANX_RULE_FIRST)
		manx_rule_hit(d.rule_id);
	if ((ep->flags & MANX_EP_F_LOG_ALLOWED) || (d.flags & MANX_POL_F_LOG))
		manx_flow_event(ifindex, dir, &pkt, d.identity, d.rule_id, d.verdict, MANX_CNT_ALLOW_NEW);
	manx_count(ifindex, dir, MANX_CNT_ALLOW_NEW, pkt.len);
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
