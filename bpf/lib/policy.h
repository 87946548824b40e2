/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The policy decision: exactly two map lookups, whatever the rule count.
 * 1. ipcache: {generation, peer address} -> identity (LPM).
 * 2. policy: {rule set, identity, proto, port} -> verdict (LPM). The
 *    compiler resolved tiers, orders, Pass, Deny and defaults beforehand.
 * The rule set comes from the endpoint's slot of the same generation, so
 * the two always belong to one compile (see manx_generation in maps.h). */
#ifndef MANX_POLICY_H
#define MANX_POLICY_H

#include "map_defs.h"

struct manx_decision {
	__u32 rule_id;
	__u32 identity;
	__u8 verdict;
	__u8 flags;
};

/* The endpoint's rule sets in the generation in force, which *gen is set
 * to; NULL (fail closed) only if the maps are not what the daemon made. */
static __always_inline const struct manx_ep_policy *manx_policy_slot(const struct manx_endpoint *ep, __u32 *gen)
{
	__u32 zero = 0;
	struct manx_generation *g = bpf_map_lookup_elem(&manx_generation, &zero);

	if (!g)
		return NULL;
	*gen = g->active & 1;
	__u32 index = ep->id * MANX_GENERATIONS + *gen;
	return bpf_map_lookup_elem(&manx_ep_policy, &index);
}

static __always_inline __u32 manx_identity_of(__u32 gen, __be32 addr)
{
	struct manx_ipcache_key k = {
		.prefixlen = MANX_IPCACHE_PREFIX_GENERATION + 32,
		.generation = bpf_htonl(gen),
		.addr = addr,
	};
	struct manx_ipcache_value *v = bpf_map_lookup_elem(&manx_ipcache, &k);

	return v ? v->identity : MANX_IDENTITY_WORLD;
}

static __always_inline void manx_decide(__u32 gen, __u32 ruleset, __be32 peer, __u8 proto, __be16 port,
					struct manx_decision *d)
{
	if (ruleset == MANX_RULESET_ALLOW_ALL) {
		d->verdict = MANX_VERDICT_ALLOW;
		d->rule_id = MANX_RULE_NONE;
		d->identity = MANX_IDENTITY_UNKNOWN;
		d->flags = 0;
		return;
	}
	d->identity = manx_identity_of(gen, peer);

	struct manx_policy_key k = {
		.prefixlen = MANX_POLICY_PREFIX_FULL,
		.ruleset = bpf_htonl(ruleset),
		.identity = bpf_htonl(d->identity),
		.proto = proto,
		.port = port,
	};
	struct manx_policy_value *v = bpf_map_lookup_elem(&manx_policy, &k);

	if (!v) {
		/* Every rule set has a default entry; a miss means the rule set
		 * is not (or no longer) programmed: fail closed. */
		d->verdict = MANX_VERDICT_DENY;
		d->rule_id = MANX_RULE_DEFAULT_DENY;
		d->flags = 0;
		return;
	}
	d->verdict = v->verdict;
	d->rule_id = v->rule_id;
	d->flags = v->flags;
}

#endif
