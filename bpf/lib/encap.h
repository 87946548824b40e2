/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Routing between nodes: native forwarding, IPIP and VXLAN encapsulation
 * and decapsulation, and ICMP fragmentation-needed for packets that would
 * not fit the tunnel. The outer headers are built here with
 * bpf_skb_adjust_room: no tunnel device (nor the ipip module) is needed.
 */
#ifndef MANX_ENCAP_H
#define MANX_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "map_defs.h"
#include "parse.h"

#ifndef AF_INET
#define AF_INET 2
#endif

#define MANX_IP_DF 0x4000
#define MANX_IP_MF_OFFSET 0x3fff /* more-fragments flag and fragment offset */
#define MANX_IP_OFFSET 0x1fff    /* fragment offset */
#define MANX_GSO_BY_FRAGS 0xffff /* gso_size of SCTP GSO: segments sized by the sender */
#define MANX_IPIP_OVERHEAD  20
#define MANX_VXLAN_OVERHEAD (20 + 8 + 8 + ETH_HLEN)

struct manx_vxlanhdr {
	__be32 flags; /* 0x08000000: the VNI is valid */
	__be32 vni;   /* VNI << 8 */
};

/* What VXLAN adds in front of the inner frame: MANX_VXLAN_OVERHEAD bytes
 * (sizeof rounds up to 52 for alignment; only the first 50 are written). */
struct manx_vxlan_outer {
	struct iphdr ip;
	struct udphdr udp;
	struct manx_vxlanhdr vxlan;
	struct ethhdr eth;
};

static __always_inline void manx_stat(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&manx_node_stats, &stat);
	if (v)
		*v += 1; /* per-CPU: no atomics needed */
}

static __always_inline struct manx_node_config *manx_node_config_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&manx_node_config, &zero);
}

static __always_inline __sum16 manx_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

/* A header built on the stack gets its checksum in one bpf_csum_diff call:
 * a kernel receiver drops IPv4 packets whose header checksum is wrong. */
static __always_inline void manx_ip_set_csum(struct iphdr *ip)
{
	ip->check = 0;
	ip->check = manx_csum_fold(bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0));
}

static __always_inline void manx_outer_ip(struct iphdr *ip, const struct iphdr *inner, __u32 payload,
					  __u8 proto, __be32 saddr, __be32 daddr)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = inner->tos;
	/* GSO packets are segmented later, and segmentation rewrites the
	 * length and checksum of every outer header: the value here only
	 * matters for single packets. */
	ip->tot_len = bpf_htons(sizeof(*ip) + payload);
	ip->id = inner->id;
	ip->frag_off = inner->frag_off & bpf_htons(MANX_IP_DF); /* path MTU discovery keeps working */
	ip->ttl = 64;
	ip->protocol = proto;
	ip->saddr = saddr;
	ip->daddr = daddr;
	manx_ip_set_csum(ip);
}

/* The network-layer length of the packet, or of each segment of a GSO
 * packet (gso_size counts payload only, so add the headers). SCTP sizes
 * its own GSO segments to the path MTU (the pod's), so they fit. */
static __always_inline __u32 manx_wire_len(struct __sk_buff *skb, const struct iphdr *ip)
{
	if (!skb->gso_size)
		return skb->len - ETH_HLEN;
	if (skb->gso_size == MANX_GSO_BY_FRAGS)
		return 0;
	__u32 hdrs = ip->ihl * 4;
	if (ip->protocol == IPPROTO_TCP) {
		__u8 doff = 0;
		bpf_skb_load_bytes(skb, ETH_HLEN + hdrs + 12, &doff, 1);
		hdrs += (doff >> 4) * 4;
	} else {
		hdrs += sizeof(struct udphdr);
	}
	return skb->gso_size + hdrs;
}

/* Turns the packet into ICMP "fragmentation needed" (type 3 code 4) for its
 * sender, announcing the MTU that fits, and delivers it straight into the
 * pod (the peer of the veth it came in on: this runs at tc ingress), so the
 * pod's ingress policy, which has never seen the node's address, is not in
 * the way. Only for IPv4 headers without options, which is what pods send.
 * The skb may still ask for checksum offload at an offset inside the quote;
 * it only reaches the pod's stack, which does not use it. */
static __always_inline int manx_icmp_frag_needed(struct __sk_buff *skb, const struct manx_node_config *cfg,
						 __u32 mtu)
{
	struct {
		struct iphdr ip;
		struct manx_icmphdr icmp;
		__u8 quote[sizeof(struct iphdr) + 8]; /* the offending header + 8 bytes */
	} r = {};
	_Static_assert(sizeof(r) == 56, "ICMP error layout has no padding");
	struct ethhdr eth;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, r.quote, sizeof(r.quote)))
		return TC_ACT_SHOT;
	struct iphdr *orig = (struct iphdr *)r.quote;
	if (orig->ihl != 5) {
		manx_stat(MANX_STAT_TOO_BIG_DROPPED);
		return TC_ACT_SHOT;
	}

	r.ip.version = 4;
	r.ip.ihl = 5;
	r.ip.tos = 0xc0; /* internetwork control, as the kernel sends errors */
	r.ip.tot_len = bpf_htons(sizeof(r));
	r.ip.ttl = 64;
	r.ip.protocol = IPPROTO_ICMP;
	r.ip.saddr = cfg->address;
	r.ip.daddr = orig->saddr;
	manx_ip_set_csum(&r.ip);
	r.icmp.type = 3; /* destination unreachable */
	r.icmp.code = 4; /* fragmentation needed and DF set */
	r.icmp.sequence = bpf_htons(mtu); /* next-hop MTU (RFC 1191) */
	r.icmp.checksum = manx_csum_fold(bpf_csum_diff(0, 0, (__be32 *)&r.icmp,
						       sizeof(r) - sizeof(r.ip), 0));

	/* Back to where it came from: swap the MAC addresses. */
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, eth.h_dest, ETH_ALEN);
	__builtin_memcpy(eth.h_dest, eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, mac, ETH_ALEN);

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(r), 0) ||
	    bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &r, sizeof(r), 0))
		return TC_ACT_SHOT;
	manx_stat(MANX_STAT_FRAG_NEEDED);
	return bpf_redirect_peer(skb->ifindex, 0);
}

static __always_inline int manx_encap_ipip(struct __sk_buff *skb, const struct iphdr *inner, __be32 saddr,
					   __be32 daddr)
{
	struct iphdr outer = {};
	manx_outer_ip(&outer, inner, skb->len - ETH_HLEN, IPPROTO_IPIP, saddr, daddr);
	/* FIXED_GSO keeps the segment size: the pod's MTU already leaves room
	 * for the outer header, and shrinking segments would cost throughput. */
	if (bpf_skb_adjust_room(skb, sizeof(outer), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_FIXED_GSO))
		return -1;
	return bpf_skb_store_bytes(skb, ETH_HLEN, &outer, sizeof(outer), 0);
}

/* The inner destination MAC of VXLAN frames: the receiving node's VXLAN
 * device address, derived from its node address (0e:4d:<address>), so a
 * node that decapsulates through a VXLAN device accepts frames built here
 * too. A node that decapsulates in BPF ignores it. */
static __always_inline void manx_vxlan_inner_mac(__u8 *mac, __be32 daddr)
{
	mac[0] = 0x0e;
	mac[1] = 0x4d;
	__builtin_memcpy(&mac[2], &daddr, 4);
}

static __always_inline int manx_encap_vxlan(struct __sk_buff *skb, const struct iphdr *inner, __be32 saddr,
					    __be32 daddr, __u32 vni)
{
	struct manx_vxlan_outer o = {};
	__u32 frame = skb->len; /* the inner Ethernet frame */

	if (bpf_skb_load_bytes(skb, 0, &o.eth, sizeof(o.eth)))
		return -1;
	manx_vxlan_inner_mac(o.eth.h_dest, daddr);
	manx_outer_ip(&o.ip, inner, MANX_VXLAN_OVERHEAD - sizeof(o.ip) - sizeof(o.eth) + frame, IPPROTO_UDP, saddr, daddr);
	/* Source port from the flow hash, in the range Linux uses, so the
	 * underlay spreads flows (ECMP, RSS) as it would for the kernel's VXLAN. */
	__u32 hash = bpf_get_hash_recalc(skb);
	o.udp.source = bpf_htons(32768 + (((__u64)hash * (61000 - 32768)) >> 32)); /* reciprocal_scale */
	o.udp.dest = bpf_htons(MANX_VXLAN_PORT);
	o.udp.len = bpf_htons(sizeof(o.udp) + sizeof(o.vxlan) + frame);
	o.udp.check = 0; /* optional over IPv4; the inner packet has its own */
	o.vxlan.flags = bpf_htonl(0x08000000);
	o.vxlan.vni = bpf_htonl(vni << 8);
	if (bpf_skb_adjust_room(skb, MANX_VXLAN_OVERHEAD, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
					BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN) |
					BPF_F_ADJ_ROOM_FIXED_GSO))
		return -1;
	return bpf_skb_store_bytes(skb, ETH_HLEN, &o, MANX_VXLAN_OVERHEAD, 0);
}

/* Through a collect_md VXLAN device: the kernel builds the headers. */
static __always_inline int manx_encap_vxlan_device(struct __sk_buff *skb, const struct manx_node_config *cfg,
						   const struct iphdr *inner, __be32 daddr)
{
	struct bpf_tunnel_key key = {};
	__u8 mac[ETH_ALEN];

	manx_vxlan_inner_mac(mac, daddr);
	key.remote_ipv4 = bpf_ntohl(daddr); /* host byte order in this API */
	key.tunnel_id = cfg->vxlan_vni;
	key.tunnel_tos = inner->tos;
	key.tunnel_ttl = 64;
	if (bpf_skb_store_bytes(skb, 0, mac, ETH_ALEN, 0) ||
	    bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX))
		return -1;
	return bpf_redirect(cfg->vxlan_ifindex, 0);
}

/*
 * Called for a packet a local workload sent, once policy allowed it.
 * Destinations on other nodes leave here, straight to the underlay; the
 * rest (local pods, addresses outside every pool) go to the kernel's
 * routing, where natOutgoing applies.
 */
static __always_inline int manx_forward(struct __sk_buff *skb, const struct manx_pkt *pkt)
{
	struct manx_route_key rk = { .prefixlen = 32, .addr = pkt->daddr };
	struct manx_route_value *route = bpf_map_lookup_elem(&manx_routes, &rk);

	if (!route || !(route->flags & MANX_ROUTE_F_REMOTE))
		return TC_ACT_OK;
	struct manx_node_config *cfg = manx_node_config_get();
	if (!cfg || !cfg->underlay_ifindex)
		return TC_ACT_OK;

	struct iphdr inner;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &inner, sizeof(inner)))
		return TC_ACT_SHOT;

	__u32 overhead = route->flags & MANX_ROUTE_F_IPIP ? MANX_IPIP_OVERHEAD
		       : route->flags & MANX_ROUTE_F_VXLAN ? MANX_VXLAN_OVERHEAD
							 : 0;
	/* With encapsulation in BPF an oversize packet would be a silent black
	 * hole (the peer's veth drops it), so tell the sender, as a router does. */
	if (manx_wire_len(skb, &inner) + overhead > cfg->underlay_mtu) {
		if (inner.frag_off & bpf_htons(MANX_IP_DF))
			return manx_icmp_frag_needed(skb, cfg, cfg->underlay_mtu - overhead);
		manx_stat(MANX_STAT_TOO_BIG_DROPPED);
		return TC_ACT_SHOT;
	}

	if (route->flags & MANX_ROUTE_F_IPIP) {
		if (manx_encap_ipip(skb, &inner, cfg->address, route->next_hop))
			goto error;
		manx_stat(MANX_STAT_ENCAP_IPIP);
	} else if (route->flags & MANX_ROUTE_F_VXLAN) {
		if (cfg->vxlan_ifindex) {
			int rc = manx_encap_vxlan_device(skb, cfg, &inner, route->next_hop);
			if (rc < 0)
				goto error;
			manx_stat(MANX_STAT_ENCAP_VXLAN);
			return rc;
		}
		if (manx_encap_vxlan(skb, &inner, cfg->address, route->next_hop, cfg->vxlan_vni))
			goto error;
		manx_stat(MANX_STAT_ENCAP_VXLAN);
	} else {
		/* Same subnet, no tunnel: the next hop is the node itself. */
		struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = route->next_hop };
		manx_stat(MANX_STAT_ROUTED);
		return bpf_redirect_neigh(cfg->underlay_ifindex, &nh, sizeof(nh), 0);
	}
	/* The outer destination is a node: the kernel's FIB picks the next hop
	 * (the node itself, or a router between subnets) and its MAC. */
	return bpf_redirect_neigh(cfg->underlay_ifindex, 0, 0, 0);
error:
	manx_stat(MANX_STAT_FORWARD_ERROR);
	return TC_ACT_SHOT;
}

/*
 * Underlay ingress: strips IPIP and VXLAN addressed to this node, after
 * checking that the sending node is the one hosting the inner source (so a
 * host on the underlay cannot inject pod traffic), then hands the inner
 * packet to the kernel, which routes it to the pod's veth, where the pod's
 * ingress policy runs.
 */
static __always_inline int manx_decap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	/* Most underlay traffic is not for the tunnel: decide that from the
	 * outer header alone, which is in the linear area. */
	struct ethhdr *eth = data;
	struct iphdr *ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    (ip->protocol != IPPROTO_IPIP && ip->protocol != IPPROTO_UDP))
		return TC_ACT_OK;
	struct manx_node_config *cfg = manx_node_config_get();
	if (!cfg || ip->daddr != cfg->address)
		return TC_ACT_OK;
	if (ip->ihl != 5 || (ip->frag_off & bpf_htons(MANX_IP_MF_OFFSET))) {
		/* Nodes send neither options nor fragments (see manx_forward).
		 * Such a packet would skip the sender check below, and the
		 * kernel would hand a reassembled one to a VXLAN device's
		 * socket: drop IPIP, and UDP whose header names the VXLAN port.
		 * A later UDP fragment is harmless without its first. */
		if (ip->protocol == IPPROTO_IPIP)
			goto reject;
		if (ip->frag_off & bpf_htons(MANX_IP_OFFSET))
			return TC_ACT_OK;
		__be16 dport = 0;
		if (bpf_skb_load_bytes(skb, ETH_HLEN + ip->ihl * 4 + __builtin_offsetof(struct udphdr, dest), &dport, sizeof(dport)) ||
		    dport == bpf_htons(MANX_VXLAN_PORT))
			goto reject;
		return TC_ACT_OK;
	}

	/* Outer IPv4 + UDP + VXLAN + inner Ethernet + inner IPv4. */
	__u32 want = ETH_HLEN + MANX_VXLAN_OVERHEAD + sizeof(struct iphdr);
	if (ip->protocol == IPPROTO_IPIP)
		want = ETH_HLEN + MANX_IPIP_OVERHEAD + sizeof(struct iphdr);
	if (data + want > data_end) {
		bpf_skb_pull_data(skb, want < skb->len ? want : skb->len);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > data_end)
			goto reject;
	}

	struct iphdr *inner;
	__u32 strip, stat;
	if (ip->protocol == IPPROTO_IPIP) {
		inner = (void *)(ip + 1);
		strip = MANX_IPIP_OVERHEAD;
		stat = MANX_STAT_DECAP_IPIP;
	} else {
		struct manx_vxlan_outer *o = (void *)ip;
		if ((void *)&o->udp + sizeof(o->udp) > data_end || o->udp.dest != bpf_htons(MANX_VXLAN_PORT))
			return TC_ACT_OK;
		if ((void *)o + MANX_VXLAN_OVERHEAD > data_end || o->vxlan.vni != bpf_htonl(cfg->vxlan_vni << 8) ||
		    o->eth.h_proto != bpf_htons(ETH_P_IP))
			goto reject;
		inner = (void *)o + MANX_VXLAN_OVERHEAD;
		strip = MANX_VXLAN_OVERHEAD;
		stat = MANX_STAT_DECAP_VXLAN;
	}
	if ((void *)(inner + 1) > data_end)
		goto reject;

	/* The sender must be the node hosting the inner source (a remote
	 * route: a local /32 has no next hop to compare). */
	struct manx_route_key rk = { .prefixlen = 32, .addr = inner->saddr };
	struct manx_route_value *route = bpf_map_lookup_elem(&manx_routes, &rk);
	if (!route || !(route->flags & MANX_ROUTE_F_REMOTE) || route->next_hop != ip->saddr)
		goto reject;

	/* With a VXLAN device in use, its socket decapsulates. */
	if (stat == MANX_STAT_DECAP_VXLAN && cfg->vxlan_ifindex) {
		manx_stat(stat);
		return TC_ACT_OK;
	}
	/* FIXED_GSO: a GRO-merged packet keeps its segment size. IPIP has no
	 * outer L4 checksum, so the inner checksum state stays valid. */
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	if (stat == MANX_STAT_DECAP_IPIP)
		flags |= BPF_F_ADJ_ROOM_NO_CSUM_RESET;
	if (bpf_skb_adjust_room(skb, -(__s32)strip, BPF_ADJ_ROOM_MAC, flags)) {
		manx_stat(MANX_STAT_FORWARD_ERROR);
		return TC_ACT_SHOT;
	}
	manx_stat(stat);
	return TC_ACT_OK;
reject:
	manx_stat(MANX_STAT_DECAP_REJECTED);
	return TC_ACT_SHOT;
}

#endif
