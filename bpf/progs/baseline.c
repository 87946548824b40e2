/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Pass-through programs: the zero-cost reference for BPF_PROG_TEST_RUN
 * timings and the "no policy" baseline in benchmarks. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int manx_tc_pass(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

SEC("xdp")
int manx_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
