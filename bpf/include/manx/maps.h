/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one definition of every map layout shared between the BPF programs
 * and the Swift control plane. Swift imports this header (module
 * ManxMapLayout) and its tests assert the sizes and offsets below, so a
 * change here that is not mirrored fails the build's tests, not production.
 *
 * Byte order: addresses and ports are kept in network byte order, exactly
 * as they appear in the packet, so the fast path never converts them.
 */
#ifndef MANX_MAPS_H
#define MANX_MAPS_H

#include <linux/types.h>

/* Map names (also the pin file names under the pin root). */
#define MANX_MAP_ENDPOINTS   "manx_endpoints"
#define MANX_MAP_IPCACHE     "manx_ipcache"
#define MANX_MAP_POLICY      "manx_policy"
#define MANX_MAP_CONNTRACK   "manx_ct"
#define MANX_MAP_COUNTERS    "manx_counters"
#define MANX_MAP_RULE_HITS   "manx_rule_hits"
#define MANX_MAP_EVENTS      "manx_events"
#define MANX_MAP_XDP_DENY    "manx_xdp_deny"
#define MANX_MAP_ROUTES      "manx_routes"
#define MANX_MAP_NODE_CONFIG "manx_node_config"
#define MANX_MAP_NODE_STATS  "manx_node_stats"
#define MANX_MAP_FRAGS       "manx_frags"
#define MANX_MAP_EP_POLICY   "manx_ep_policy"
#define MANX_MAP_GENERATION  "manx_generation"
#define MANX_MAP_ALLOC       "manx_alloc"
#define MANX_MAP_CT_LIVE     "manx_ct_live"
#define MANX_MAP_CT_PEERS    "manx_ct_peers"
#define MANX_MAP_CT_PEERS_MISSED "manx_ct_peers_missed"

#define MANX_ENDPOINTS_MAX   65536
#define MANX_IPCACHE_MAX     1048576
#define MANX_POLICY_MAX      4194304
#define MANX_RULE_HITS_MAX   1048576
#define MANX_EVENTS_BYTES    (1 << 20)
#define MANX_XDP_DENY_MAX    65536
#define MANX_ROUTES_MAX      65536
#define MANX_FRAGS_MAX       65536
#define MANX_ALLOC_MAX       4194304

/* ---- Policy generations ------------------------------------------------ */
/*
 * Rule sets are compiled against one numbering of peers: the identities of
 * one ipcache. So the ipcache and every endpoint's rule sets are kept twice,
 * once per generation, and the programs read the generation in force from
 * manx_generation, a single word. The daemon writes the idle generation
 * (ipcache entries, each endpoint's rule sets), flips the word, waits until
 * no program can still be using the old one, and only then deletes what it
 * no longer needs. A packet therefore always meets rule sets and identities
 * that were compiled together: no packet sees half a policy.
 */
#define MANX_GENERATIONS 2

struct manx_generation {
	__u32 active; /* 0 or 1: the generation in force */
};

/* ---- Endpoints: key __u32 ifindex of the host-side interface ------------ */

struct manx_endpoint {
	__u32 flags;  /* MANX_EP_F_* */
	__u32 id;     /* its slot in manx_ct (its conntrack table) and in manx_ep_policy */
	__be32 addr;  /* the workload's IPv4 address: the only source it may
		       * send from and the only destination it receives */
};

#define MANX_EP_F_LOG_ALLOWED (1U << 0) /* emit flow events for allowed new flows */

/* ---- Endpoint policy: array, index id * MANX_GENERATIONS + generation --- */
/*
 * An array, not part of manx_endpoints: the daemon writes only the idle
 * generation's slots, in place, so a program never reads a slot while it
 * changes (hash elements can be reused for another key as soon as they are
 * replaced).
 */

/* Rule set 0 means "not isolated in this direction": everything allowed. */
#define MANX_RULESET_ALLOW_ALL 0
/* Ids from here up are never compiled rule sets. */
#define MANX_RULESET_RESERVED  0xfffffff0U
/* An endpoint slot not yet programmed (an endpoint that comes into force
 * with the next generation): no entries, so everything is denied. */
#define MANX_RULESET_PENDING   0xfffffffdU
/* What the daemon writes into a conntrack entry whose peer changed
 * identity: no rule set in force matches it, so the next packet is judged
 * again, in its flow's original direction. */
#define MANX_RULESET_REVOKED   0xfffffffeU
/* What a conntrack entry the node rule approved records, so no rule set in
 * force ever matches it. */
#define MANX_RULESET_NODE      0xffffffffU

struct manx_ep_policy {
	__u32 ingress_ruleset; /* policy applied to traffic towards the workload */
	__u32 egress_ruleset;  /* policy applied to traffic from the workload */
	__u32 identity;        /* the workload's own identity */
};

/* ---- IP cache: LPM trie, IPv4 prefix -> identity ------------------------ */

/* Reserved identities. Compiled identities start at MANX_IDENTITY_FIRST. */
#define MANX_IDENTITY_UNKNOWN 0
#define MANX_IDENTITY_HOST    1
#define MANX_IDENTITY_WORLD   2
#define MANX_IDENTITY_FIRST   16

struct manx_ipcache_key {
	__u32 prefixlen;   /* LPM prefix length in bits: 32 (the generation) + 0..32 */
	__be32 generation; /* which generation's numbering this entry belongs to */
	__be32 addr;
};

#define MANX_IPCACHE_PREFIX_GENERATION 32

struct manx_ipcache_value {
	__u32 identity;
	__be32 tunnel_endpoint; /* node address for remote workloads, 0 if local */
	__u32 flags;            /* MANX_IPC_F_* */
};

#define MANX_IPC_F_LOCAL_WORKLOAD (1U << 0)

/* ---- Policy decision table: LPM trie ------------------------------------ */
/*
 * Key fields are matched most significant first: rule set, peer identity,
 * IP protocol, then the destination port. The compiler splits port ranges
 * into prefixes, so one lookup finds the most specific of:
 *   {ruleset}                      the rule set's default (prefixlen 32)
 *   {ruleset, identity}            this peer, any other protocol (64)
 *   {ruleset, identity, proto}     this peer and protocol, any port (80)
 *   {ruleset, identity, proto, port/N}  a port range (80 + N)
 * For ICMP the port field holds the type (high byte) and code (low byte),
 * in the same order as the ICMP header, so "type only" is a /8 port prefix.
 * The pad byte is always zero and is covered by the proto prefix.
 */
struct manx_policy_key {
	__u32 prefixlen;
	__be32 ruleset;
	__be32 identity;
	__u8 proto;
	__u8 pad;
	__be16 port;
};

#define MANX_POLICY_PREFIX_RULESET  32
#define MANX_POLICY_PREFIX_IDENTITY 64
#define MANX_POLICY_PREFIX_PROTO    80
#define MANX_POLICY_PREFIX_FULL     96

enum manx_verdict {
	MANX_VERDICT_DENY = 0,
	MANX_VERDICT_ALLOW = 1,
};

struct manx_policy_value {
	__u32 rule_id; /* index into the compiler's rule table (counters, flow logs) */
	__u8 verdict;  /* enum manx_verdict */
	__u8 flags;    /* MANX_POL_F_* */
	__u16 pad;
};

#define MANX_POL_F_LOG     (1U << 0) /* a Log rule matched on the way */
#define MANX_POL_F_DEFAULT (1U << 1) /* no rule matched: a tier's default action */

/* Rule ids below this are reserved for built-in decisions. */
#define MANX_RULE_NONE            0 /* no policy: endpoint not isolated */
#define MANX_RULE_DEFAULT_DENY    1 /* isolated and nothing matched */
#define MANX_RULE_NODE            2 /* from this node itself: Kubernetes' node rule */
#define MANX_RULE_FIRST           16

/* ---- Conntrack: one hash table per endpoint ----------------------------- */
/*
 * manx_ct is an array of maps indexed by the endpoint's id: each endpoint
 * has a table of its own, created by the daemon with the endpoint and
 * freed with it. So every entry belongs to the endpoint that created it
 * (a later endpoint with the same address starts empty), and an endpoint
 * can fill only its own table: its budget is the table's max_entries.
 * The tables are plain hashes, not LRU: when one is full, that endpoint's
 * new flows are refused (fail closed) and nothing established is evicted;
 * the daemon deletes entries idle past their timeout.
 *
 * Both directions of a flow share an entry: the side with the lower
 * (address, port) is "a". The entry records whether the endpoint
 * originated the flow (its egress policy approved it) or received it (its
 * ingress policy did), and the rule set that approved it, so a policy
 * change (a new rule set id) makes the next packet re-evaluate.
 */
struct manx_ct_key {
	__be32 addr_a;
	__be32 addr_b;
	__be16 port_a;
	__be16 port_b;
	__u8 proto;
	__u8 query; /* ICMP queries: the request type (8 echo, 13, 15, 17), else 0 */
	__u8 pad[2];
};

struct manx_ct_value {
	__u64 created_ns;
	__u64 last_seen_ns;
	__u64 packets;
	__u64 bytes;
	__u32 ruleset;      /* the endpoint's rule set that approved the flow */
	__u32 rule_id;      /* the rule that approved it */
	__u32 flags;        /* MANX_CT_F_*, set with atomic or */
	__be16 policy_port; /* the port (or ICMP type/code) policy was checked on */
	__u16 pad;
};

#define MANX_CT_F_ORIG_IS_A       (1U << 0) /* "a" is the flow's originator */
#define MANX_CT_F_EP_ORIGINATED   (1U << 1) /* the endpoint opened the flow: its egress policy governs */
#define MANX_CT_F_SEEN_REPLY      (1U << 2)
#define MANX_CT_F_FIN_ORIG        (1U << 3)
#define MANX_CT_F_FIN_REPLY       (1U << 4)
#define MANX_CT_F_RST             (1U << 5)
#define MANX_CT_F_FROM_NODE       (1U << 6) /* opened by this node itself: allowed by the node rule */

/*
 * manx_ct_live: an array of __u32 indexed by the endpoint's id, non-zero
 * once the program has created an entry in that endpoint's table. The
 * daemon clears it before an expiry pass reads the table, and sets it
 * again if entries remain; so zero means the table is empty. Revocation
 * and expiry skip those tables: reading an empty one still walks all of
 * its buckets (2 MiB at the default budget).
 */

/*
 * manx_ct_peers: a hash from a peer address (__be32) to __u32 1. It holds
 * every address that is the far end of a flow that some endpoint's table
 * holds approved by a rule set (not "allow all", nor a reserved value:
 * revocation skips those): a program adds the peer before the entry shows
 * such an approval, and nothing ever removes one. A peer that cannot be added (the map is full) is
 * counted in manx_ct_peers_missed (an array of one __u64) instead.
 *
 * When a pod appears, its address changes identity, and approvals of flows
 * with that address must be revoked. That means reading every table, and
 * reading one walks all of its buckets. While the missed count is still
 * what it was when the daemon last added every table's peers itself, an
 * address absent from this map is in no table, and the daemon skips the
 * read.
 */
#define MANX_CT_PEERS_MAX 262144

/* Conntrack entries an endpoint may hold unless the daemon is told
 * otherwise (manxd --conntrack-budget): room for a busy server. */
#define MANX_CT_BUDGET_DEFAULT 131072

/* Idle timeouts, in seconds. A closed TCP flow lingers briefly for late ACKs. */
#define MANX_CT_TIMEOUT_TCP_SYN     30
#define MANX_CT_TIMEOUT_TCP_EST     7200
#define MANX_CT_TIMEOUT_TCP_CLOSED  10
#define MANX_CT_TIMEOUT_UDP         60
#define MANX_CT_TIMEOUT_UDP_UNREPLIED 30 /* as Linux: a flood of one-way flows ages out sooner */
#define MANX_CT_TIMEOUT_OTHER       30

/* ---- IP fragments: LRU hash, one entry per datagram in flight ----------- */
/*
 * Only a datagram's first fragment carries the L4 header. When policy (or
 * conntrack) lets it through, its entry records what later fragments of the
 * same datagram need: they pass while the rule set that decided it is still
 * the endpoint's, and only if they start past the L4 header the decision
 * read. A later fragment with no entry (its datagram denied, or its first
 * fragment not seen yet) is dropped, as the kernel drops a datagram whose
 * first fragment is lost. Evicting an entry only drops fragments: the table
 * fails closed.
 */
struct manx_frag_key {
	__u32 endpoint; /* the endpoint's id */
	__be32 saddr;
	__be32 daddr;
	__be16 ip_id;
	__u8 proto;
	__u8 direction; /* enum manx_direction */
};

struct manx_frag_value {
	__u64 first_seen_ns;
	__u32 ruleset;   /* the rule set that let the first fragment through */
	__be16 sport;    /* the datagram's ports, for flow events */
	__be16 dport;
	__u16 l4_len;    /* bytes of L4 header the first fragment carried */
	__u8 egress;     /* the endpoint's egress rule set decided (else its ingress) */
	__u8 pad;
	__u32 pad2;
};

/* ---- Allocations: hash, content digest -> id ---------------------------- */
/*
 * The compiler's ids (identities, rule ids, rule set ids), each keyed by the
 * SHA-256 of what it stands for, and the next free id of each kind (kind
 * MANX_ALLOC_NEXT + kind, digest zero). Only the daemon reads them: they
 * live here, with the state they number, so a restarted daemon gives every
 * content the id it had and never hands out an id twice.
 */
enum manx_alloc_kind {
	MANX_ALLOC_IDENTITY = 1,
	MANX_ALLOC_RULE = 2,
	MANX_ALLOC_RULESET = 3,
	MANX_ALLOC_NEXT = 0x100,
};

struct manx_alloc_key {
	__u32 kind; /* enum manx_alloc_kind */
	__u8 digest[32];
};

struct manx_alloc_value {
	__u32 id;
};

/* ---- Per-endpoint counters: per-CPU hash -------------------------------- */

enum manx_direction {
	MANX_DIR_INGRESS = 0, /* towards the workload */
	MANX_DIR_EGRESS = 1,  /* from the workload */
};

struct manx_counters_key {
	__u32 ifindex;
	__u32 direction; /* enum manx_direction */
};

enum manx_counter {
	MANX_CNT_ALLOW_NEW = 0,      /* new flow allowed by a policy lookup */
	MANX_CNT_ALLOW_CT,           /* allowed by conntrack, no policy lookup */
	MANX_CNT_ALLOW_ARP,          /* ARP, the only non-IP protocol a workload speaks */
	MANX_CNT_ALLOW_NODE,         /* new flow opened by this node itself (Kubernetes' node rule) */
	MANX_CNT_ALLOW_RELATED,      /* ICMP error about a live flow of the endpoint */
	MANX_CNT_ALLOW_FRAGMENT,     /* later fragment of a datagram whose first fragment passed */
	MANX_CNT_DROP_POLICY,        /* a Deny rule matched */
	MANX_CNT_DROP_DEFAULT,       /* isolated, no rule matched */
	MANX_CNT_DROP_MALFORMED,     /* truncated or invalid headers */
	MANX_CNT_DROP_IPV6,          /* IPv6 is not supported yet: fail closed */
	MANX_CNT_DROP_FRAGMENT,      /* later fragment of a datagram denied, unseen, or under a replaced rule set */
	MANX_CNT_DROP_NO_ENDPOINT,   /* program attached but endpoint unknown */
	MANX_CNT_DROP_SPOOFED_SOURCE, /* from the workload, source is not its address */
	MANX_CNT_DROP_WRONG_DEST,    /* to the workload, destination is not its address */
	MANX_CNT_DROP_VLAN,          /* a VLAN tag, in the frame or in skb metadata */
	MANX_CNT_DROP_NON_IP,        /* neither IPv4, IPv6 nor ARP */
	MANX_CNT_DROP_TUNNEL,        /* IPIP or UDP to the VXLAN port sent by a workload */
	MANX_CNT_DROP_CT_FULL,       /* new flow refused: the endpoint's conntrack budget is used up */
	MANX_CNT_DROP_ICMP_UNRELATED, /* ICMP error quoting no live flow of the endpoint */
	MANX_CNT_DROP_FRAG_TINY,     /* first fragment without its whole L4 header */
	MANX_CNT_DROP_FRAG_OVERLAP,  /* fragment starting inside the L4 header, or a second first fragment */
	MANX_CNT_EVENT_RATE_LIMITED, /* flow event not sent: the endpoint spent its events for the window */
	MANX_CNT_EVENT_RING_FULL,    /* flow event not sent: the ring buffer was full */
	MANX_CNT_BYTES,              /* bytes of all allowed packets */
	MANX_CNT_MAX,
};

/* Flow events an endpoint may send per direction, per CPU, per window: a
 * flood of denied packets from one pod costs the ring at most
 * MANX_EVENTS_PER_WINDOW * CPUs events per window, so it can neither fill
 * the ring nor crowd out other endpoints' events. */
#define MANX_EVENTS_PER_WINDOW 32
#define MANX_EVENTS_WINDOW_NS  100000000ULL /* 100 ms */

struct manx_counters {
	__u64 value[MANX_CNT_MAX];
	/* This CPU's event budget (not counters): when the window began, and
	 * the events sent in it. */
	__u64 events_window_start;
	__u64 events_sent;
};

/* ---- Per-rule hit counters: per-CPU hash, key __u32 rule_id ------------- */

struct manx_rule_hits {
	__u64 packets; /* new flows decided by the rule */
};

/* ---- Flow events: ring buffer ------------------------------------------- */

struct manx_flow_event {
	__u64 timestamp_ns;
	__u32 ifindex;
	__u32 rule_id;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 peer_identity;
	__u8 proto;
	__u8 direction; /* enum manx_direction */
	__u8 verdict;   /* enum manx_verdict */
	__u8 reason;    /* enum manx_counter that was incremented */
};

/* ---- XDP prefilter: LPM trie of source prefixes to drop ----------------- */

struct manx_xdp_deny_key {
	__u32 prefixlen;
	__be32 addr;
};

struct manx_xdp_deny_value {
	__u64 packets; /* drops, updated without atomics: approximate */
};

/* ---- Routes: LPM trie, IPv4 prefix -> the node that hosts it ----------- */
/*
 * One entry per remote IPAM block (and a /32 per address used on another
 * node than its block's), written by the daemon from the datastore. Local
 * blocks and addresses outside every pool have no entry: the kernel routes
 * them (to the pod's veth, or out of the node with natOutgoing).
 */
struct manx_route_key {
	__u32 prefixlen;
	__be32 addr;
};

struct manx_route_value {
	__be32 next_hop; /* the underlay address of the node hosting the prefix */
	__u32 flags;     /* MANX_ROUTE_F_* */
};

#define MANX_ROUTE_F_REMOTE (1U << 0) /* hosted on another node: forward in BPF */
#define MANX_ROUTE_F_IPIP   (1U << 1) /* encapsulate in IPv4 (protocol 4) */
#define MANX_ROUTE_F_VXLAN  (1U << 2) /* encapsulate in VXLAN (UDP 4789) */

/* ---- Node configuration: array of one, written by the daemon ------------ */

struct manx_node_config {
	__be32 address;          /* this node's underlay address: outer source, decap target */
	__u32 underlay_ifindex;  /* where routed and encapsulated packets leave */
	__u32 underlay_mtu;      /* bytes of IP packet the underlay carries */
	__u32 vxlan_vni;         /* VNI of pod traffic (Calico's default: 4096) */
	__u32 vxlan_ifindex;     /* collect_md VXLAN device to encapsulate through, 0: in BPF */
	__u32 flags;             /* reserved, 0 */
};

#define MANX_VXLAN_PORT 4789

/* ---- Node statistics: per-CPU array, index enum manx_node_stat ----------- */

enum manx_node_stat {
	MANX_STAT_ROUTED = 0,       /* forwarded natively to another node */
	MANX_STAT_ENCAP_IPIP,       /* encapsulated in IPIP */
	MANX_STAT_ENCAP_VXLAN,      /* encapsulated in VXLAN */
	MANX_STAT_DECAP_IPIP,       /* IPIP received and decapsulated */
	MANX_STAT_DECAP_VXLAN,      /* VXLAN received and decapsulated */
	MANX_STAT_DECAP_REJECTED,   /* tunnel packet from a node that does not host its source, or malformed: dropped */
	MANX_STAT_FRAG_NEEDED,      /* too big for the tunnel, DF set: ICMP fragmentation-needed sent */
	MANX_STAT_TOO_BIG_DROPPED,  /* too big for the tunnel, DF clear (or IP options): dropped */
	MANX_STAT_FORWARD_ERROR,    /* encapsulation or redirect failed: dropped */
	MANX_STAT_MAX,
};

#endif /* MANX_MAPS_H */
