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

/* How conntrack treats an ICMP message (Linux's conntrack does the same). */
enum manx_icmp_class {
	MANX_ICMP_NONE = 0, /* not ICMP */
	MANX_ICMP_REQUEST,  /* echo, timestamp, information, address mask request: opens a flow */
	MANX_ICMP_REPLY,    /* their replies: pass only on the request's flow */
	MANX_ICMP_ERROR,    /* unreachable, source quench, redirect, time exceeded, parameter problem */
	MANX_ICMP_OTHER,    /* anything else: judged alone, by its own type and code */
};

/* The class of an ICMP type; for queries, *request is the request type
 * (echo reply 0 belongs to echo 8, the others to type - 1). */
static __always_inline __u8 manx_icmp_classify(__u8 type, __u8 *request)
{
	switch (type) {
	case MANX_ICMP_ECHO:
	case 13: /* timestamp */
	case 15: /* information */
	case 17: /* address mask */
		*request = type;
		return MANX_ICMP_REQUEST;
	case MANX_ICMP_ECHOREPLY:
		*request = MANX_ICMP_ECHO;
		return MANX_ICMP_REPLY;
	case 14:
	case 16:
	case 18:
		*request = type - 1;
		return MANX_ICMP_REPLY;
	case 3:  /* destination unreachable */
	case 4:  /* source quench */
	case 5:  /* redirect */
	case 11: /* time exceeded */
	case 12: /* parameter problem */
		return MANX_ICMP_ERROR;
	}
	return MANX_ICMP_OTHER;
}

#define MANX_ETH_P_QINQ1 0x9100 /* pre-802.1ad double tagging */

#define MANX_TCP_FIN 0x01
#define MANX_TCP_SYN 0x02
#define MANX_TCP_RST 0x04
#define MANX_TCP_ACK 0x10

/* What the fast path needs from a packet, all in network byte order. */
struct manx_pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;       /* ICMP queries: the identifier, so both ends agree */
	__be16 dport;
	__be16 policy_port; /* dport, or ICMP type (high byte) and code */
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp;          /* enum manx_icmp_class */
	__u8 query;         /* ICMP queries: the request type, part of the flow */
	__u16 l4_off;       /* offset of the L4 header in the frame */
	__u32 len;
	__u8 frag;          /* enum manx_frag */
	__u8 pad;
	__be16 ip_id;       /* fragments: the datagram's IP identification */
	__u16 frag_offset;  /* later fragments: bytes from the datagram's start */
	__u16 l4_len;       /* first fragments: the L4 header bytes policy read */
	__u16 ip_payload;   /* bytes after the IP header (tot_len - ihl) */
};

enum manx_frag {
	MANX_FRAG_NONE = 0,
	MANX_FRAG_FIRST, /* offset 0, more fragments follow: carries the L4 header */
	MANX_FRAG_LATER, /* offset > 0: no L4 header, follows its first fragment */
};

enum manx_parse_result {
	MANX_PARSE_OK = 0,
	MANX_PARSE_ARP,
	MANX_PARSE_VLAN,
	MANX_PARSE_NON_IP, /* anything but IPv4, IPv6, ARP and VLAN */
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
	/* A tag the kernel already moved into skb metadata hides the outer
	 * ethertype; an inner tag would hide the real payload from policy and
	 * the kernel strips it after tc. A workload has no business tagging. */
	if (skb->vlan_present || eth->h_proto == bpf_htons(ETH_P_8021Q) || eth->h_proto == bpf_htons(ETH_P_8021AD) ||
	    eth->h_proto == bpf_htons(MANX_ETH_P_QINQ1))
		return MANX_PARSE_VLAN;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return MANX_PARSE_IPV6;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return MANX_PARSE_ARP;
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
	p->icmp = MANX_ICMP_NONE;
	p->query = 0;
	p->l4_off = ETH_HLEN + ihl;
	p->ip_id = ip->id;
	p->l4_len = 0;
	__u16 tot_len = bpf_ntohs(ip->tot_len);
	p->ip_payload = tot_len > ihl ? tot_len - ihl : 0;
	__u16 frag_off = bpf_ntohs(ip->frag_off);
	p->frag_offset = (frag_off & 0x1fff) * 8;
	p->frag = p->frag_offset ? MANX_FRAG_LATER : (frag_off & 0x2000) ? MANX_FRAG_FIRST : MANX_FRAG_NONE;

	/* A later fragment carries no L4 header: it follows its first fragment. */
	if (p->frag == MANX_FRAG_LATER)
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
		p->l4_len = tcp->doff * 4 > sizeof(*tcp) ? tcp->doff * 4 : sizeof(*tcp);
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
		p->l4_len = ip->protocol == IPPROTO_SCTP ? 12 : sizeof(*udp); /* SCTP: the common header */
		break;
	}
	case IPPROTO_ICMP: {
		struct manx_icmphdr *icmp = l4;
		if ((void *)(icmp + 1) > data_end)
			return MANX_PARSE_MALFORMED;
		/* Type and code, as laid out on the wire, are the policy "port". */
		p->policy_port = *(__be16 *)icmp;
		p->l4_len = sizeof(*icmp);
		p->icmp = manx_icmp_classify(icmp->type, &p->query);
		if (p->icmp == MANX_ICMP_REQUEST || p->icmp == MANX_ICMP_REPLY) {
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

/* The packet an ICMP error quotes (its IPv4 header and first 8 bytes),
 * as the flow it belongs to. False when the quote is not of a packet that
 * can have a flow: malformed, a later fragment, or itself an ICMP error. */
static __always_inline bool manx_parse_quote(struct __sk_buff *skb, const struct manx_pkt *p, struct manx_pkt *q)
{
	struct iphdr ip;
	__u8 l4[8];
	__u32 off = p->l4_off + sizeof(struct manx_icmphdr);

	if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5 ||
	    (ip.frag_off & bpf_htons(0x1fff)) ||
	    bpf_skb_load_bytes(skb, off + ip.ihl * 4, l4, sizeof(l4)))
		return false;
	q->saddr = ip.saddr;
	q->daddr = ip.daddr;
	q->proto = ip.protocol;
	q->sport = 0;
	q->dport = 0;
	q->icmp = MANX_ICMP_NONE;
	q->query = 0;
	switch (ip.protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		__builtin_memcpy(&q->sport, &l4[0], 2);
		__builtin_memcpy(&q->dport, &l4[2], 2);
		break;
	case IPPROTO_ICMP:
		q->icmp = manx_icmp_classify(l4[0], &q->query);
		if (q->icmp != MANX_ICMP_REQUEST && q->icmp != MANX_ICMP_REPLY)
			return false;
		__builtin_memcpy(&q->sport, &l4[4], 2); /* the identifier */
		q->dport = q->sport;
		break;
	}
	return true;
}

#endif
