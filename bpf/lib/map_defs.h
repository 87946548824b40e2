/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map definitions of the workload programs. Layouts: include/manx/maps.h. */
#ifndef MANX_MAP_DEFS_H
#define MANX_MAP_DEFS_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "manx/maps.h"

/* Every map is pinned by name under the pin root the loader gives, so a
 * restarted daemon, bpfctl and all programs of a node share them. */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MANX_ENDPOINTS_MAX);
	__type(key, __u32);
	__type(value, struct manx_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MANX_ENDPOINTS_MAX * MANX_GENERATIONS);
	__type(key, __u32);
	__type(value, struct manx_ep_policy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_ep_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manx_generation);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_generation SEC(".maps");

/* Only the daemon uses it; it is here so it is pinned with the rest. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MANX_ALLOC_MAX);
	__type(key, struct manx_alloc_key);
	__type(value, struct manx_alloc_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_alloc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MANX_IPCACHE_MAX * MANX_GENERATIONS);
	__type(key, struct manx_ipcache_key);
	__type(value, struct manx_ipcache_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MANX_POLICY_MAX);
	__type(key, struct manx_policy_key);
	__type(value, struct manx_policy_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_policy SEC(".maps");

/* The shape of every endpoint's conntrack table; the daemon creates each
 * with the endpoint's budget as max_entries. */
struct manx_ct_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MANX_CT_BUDGET_DEFAULT);
	/* Sizes, not __type: BTF would only hold forward declarations of the
	 * structs here, which libbpf cannot size. */
	__uint(key_size, sizeof(struct manx_ct_key));
	__uint(value_size, sizeof(struct manx_ct_value));
	__uint(map_flags, BPF_F_NO_PREALLOC);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MANX_ENDPOINTS_MAX);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct manx_ct_table); /* last: a flexible array */
} manx_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MANX_ENDPOINTS_MAX);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_ct_live SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MANX_CT_PEERS_MAX);
	__type(key, __be32);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_ct_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_ct_peers_missed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MANX_FRAGS_MAX);
	__type(key, struct manx_frag_key);
	__type(value, struct manx_frag_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MANX_ENDPOINTS_MAX * 2);
	__type(key, struct manx_counters_key);
	__type(value, struct manx_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MANX_RULE_HITS_MAX);
	__type(key, __u32);
	__type(value, struct manx_rule_hits);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_rule_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MANX_EVENTS_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MANX_ROUTES_MAX);
	__type(key, struct manx_route_key);
	__type(value, struct manx_route_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct manx_node_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_node_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MANX_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} manx_node_stats SEC(".maps");

#endif
