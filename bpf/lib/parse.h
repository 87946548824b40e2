/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing: Ethernet, IPv4, then TCP, UDP, SCTP or ICMP. */
#ifndef MANX_PARSE_H
#define MANX_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

/* <linux/icmp.h> drags in libc socket headers that do not build for BPF. */
struct manx_icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};
#define MANX_ICMP_ECHOREPLY 0
#define MANX_ICMP_ECHO      8

#define MANX_TCP_FIN 0x01
#define MANX_TCP_SYN 0x02
#define MANX_TCP_RST 0x04
#define MANX_TCP_ACK 0x10

/* What the fast path needs from a packet, all in network byte order. */
struct manx_pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;       /* ICMP echo: the identifier, so both ends agree */
	__be16 dport;
	__be16 policy_port; /* dport, or ICMP type (high byte) and code */
	__u8 proto;
	__u8 tcp_flags;
	__u32 len;
};

enum manx_parse_result {
	MANX_PARSE_OK = 0,
	MANX_PARSE_NON_IP,
	MANX_PARSE_IPV6,
	MANX_PARSE_MALFORMED,
	MANX_PARSE_FRAGMENT,
};

/* Bytes from the start of the frame that the widest L4 header we read needs:
 * Ethernet + the largest IPv4 header + 20 bytes of TCP. */
#define MANX_PARSE_MAX_LEN (ETH_HLEN + 60 + 20)

static __always_inline int manx_parse(struct __sk_buff *skb, struct manx_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return MANX_PARSE_MALFORMED;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return MANX_PARSE_IPV6;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return MANX_PARSE_NON_IP;

	/* Headers may sit in paged data (GRO, large sends): pull them into the
	 * linear area once, then revalidate every pointer. */
	if (data + MANX_PARSE_MAX_LEN > data_end && skb->len > (__u32)(data_end - data)) {
		__u32 want = skb->len < MANX_PARSE_MAX_LEN ? skb->len : MANX_PARSE_MAX_LEN;
		bpf_skb_pull_data(skb, want);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}

	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return MANX_PARSE_MALFORMED;
	__u32 ihl = ip->ihl * 4;
	if (ip->version != 4 || ihl < sizeof(*ip))
		return MANX_PARSE_MALFORMED;

	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->len = skb->len;
	p->sport = 0;
	p->dport = 0;
	p->policy_port = 0;
	p->tcp_flags = 0;

	/* A non-first fragment carries no L4 header, so no port to police. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return MANX_PARSE_FRAGMENT;

	void *l4 = (void *)ip + ihl;
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return MANX_PARSE_MALFORMED;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_SCTP: {
		/* SCTP's common header starts with the same two ports as UDP. */
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return MANX_PARSE_MALFORMED;
		p->sport = udp->source;
		p->dport = udp->dest;
		break;
	}
	case IPPROTO_ICMP: {
		struct manx_icmphdr *icmp = l4;
		if ((void *)(icmp + 1) > data_end)
			return MANX_PARSE_MALFORMED;
		/* Type and code, as laid out on the wire, are the policy "port". */
		p->policy_port = *(__be16 *)icmp;
		if (icmp->type == MANX_ICMP_ECHO || icmp->type == MANX_ICMP_ECHOREPLY) {
			p->sport = icmp->id;
			p->dport = icmp->id;
		}
		return MANX_PARSE_OK;
	}
	default:
		return MANX_PARSE_OK;
	}
	p->policy_port = p->dport;
	return MANX_PARSE_OK;
}

#endif
