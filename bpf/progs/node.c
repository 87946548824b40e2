/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Node programs, attached with tc on the node's underlay interface:
 * tunnel packets from other nodes are decapsulated here (IPIP, VXLAN).
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "map_defs.h"
#include "encap.h"

SEC("tc")
int manx_from_underlay(struct __sk_buff *skb)
{
	return manx_decap(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
