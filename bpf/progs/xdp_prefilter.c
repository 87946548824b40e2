/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * XDP prefilter for host interfaces: drops packets from denied source
 * prefixes before the kernel allocates an skb (untracked, like Calico's
 * doNotTrack policy). Everything else passes to the stack untouched.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "manx/maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MANX_XDP_DENY_MAX);
	__type(key, struct manx_xdp_deny_key);
	__type(value, struct manx_xdp_deny_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_xdp_deny SEC(".maps");

SEC("xdp")
int manx_xdp_prefilter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;

	struct manx_xdp_deny_key k = { .prefixlen = 32, .addr = ip->saddr };
	struct manx_xdp_deny_value *v = bpf_map_lookup_elem(&manx_xdp_deny, &k);
	if (!v)
		return XDP_PASS;
	v->packets++;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
