import ManxModel
import ManxSelectors
import Synchronization

/// Compiles resources into identities, shared rule sets and LPM tables.
///
/// Every id it hands out is keyed by content (see `Allocations`): an
/// identity by the peer class it names (the matchers a region satisfies,
/// by their text, and its named ports), a rule id by the rule, a rule set
/// id by its table. So an unchanged peer keeps its identity, an unchanged
/// rule its id (and counters), and an unchanged rule set its id (no map
/// churn, conntrack approvals stay valid); a changed rule set always gets
/// a new id, so approvals made under the old one are re-checked. Ids
/// recovered from the kernel are reused for the same content.
public final class PolicyCompiler {
    public struct Options: Sendable {
        /// Only pods with the interface annotation (and, if set, on this
        /// node) are local endpoints; all pods are policy peers.
        public var nodeName: String?
        public init(nodeName: String? = nil) { self.nodeName = nodeName }
    }

    /// Every matcher this compiler has seen, numbered for the life of the
    /// process (identity keys hold the numbers; digests hold the texts).
    private var matcherNumbers: [EntityRule: Int] = [:]
    private var matcherList: [EntityRule] = []
    private var matcherTexts: [String] = []

    /// Ids in force after the last compile (or recovered), and the next free ones.
    private var allocated: Allocations
    /// The compile in progress: what it hands out and touches (the rest
    /// of what it uses is assembled at its end, see `finishAllocations`).
    private var live = Allocations()
    /// What the last compile's allocations were made of, besides the
    /// rules (`ruleAllocations`): its fixed regions' identities (with the
    /// fixed part's version) and the rest. Nil until a compile built them
    /// (recovered allocations may hold contents that are gone).
    private var lastGroups: (fixedVersion: Int, fixed: [Allocations.Key: UInt32], other: [Allocations.Key: UInt32])?
    /// Rule keys `countRules` added or dropped in this compile.
    private var changedRuleKeys: [Allocations.Key] = []
    /// Bumped whenever the fixed regions' identities are computed again.
    private var fixedVersion = 0
    /// The last compile's number, unique in the process.
    private var lastCompileID: UInt64?
    private static let nextCompileID = Atomic<UInt64>(1)
    /// The ids of the identities in force, of fixed regions and of workloads.
    private var fixedIdentityIDs: [IdentityKey: Allocated] = [:]
    private var workloadIdentityIDs: [IdentityKey: Allocated] = [:]
    /// What every rule id handed out stands for (an id is bound to one
    /// content for good, so an entry never goes stale).
    private var ruleInfos: [UInt32: (info: RuleInfo, digest: Digest)] = [:]
    /// Rule ids by content; an entry is used only while its id is live.
    private var ruleIDOf: [RuleInfo: Allocated] = [:]

    struct Allocated {
        var id: UInt32
        var digest: Digest
    }

    // Between compiles, the compiler keeps what it derived, each piece
    // with what it was derived from, so a compile after a small change
    // recomputes only what that change touches: the endpoints whose
    // policies changed, the identities of changed regions, the tables of
    // changed programs. Everything else is reused as it was.

    /// What every cache depends on; when it changes, all are dropped.
    private struct Environment: Equatable {
        var namespaces: [String: Namespace]
        var profiles: [String: Profile]
        var tiers: [String: Tier]
        var networkSets: [NetworkSet]
        var nodeName: String?
    }
    private var environment: Environment?
    /// Counts compiles: what a compile used carries its number.
    private var stamp = 0
    private var versions = 0
    private var workloadCache: [String: Workload] = [:]
    /// Policy order per tier and direction (as indices into the policies
    /// of `lastEntries`), and the tiers in order.
    private var order: PolicyOrder?
    private var policyCache: [String: PolicyEntry] = [:]
    /// The last compile's policies, in its order, and their stamps.
    private var lastEntries: [PolicyEntry] = []
    private var lastStamps: [UInt64] = []
    /// The endpoints' selector-relevant content, numbered.
    private var subjectNumbers: [Subject: Int] = [:]
    private var subjects: [Workload] = []
    private var endpointCache: [String: EndpointEntry] = [:]
    private var programs: [RuleProgram: ProgramEntry] = [:]
    private var regions: RegionCache?
    /// The identity keys of the last compile, numbered by version, with the
    /// fixed part's version and the workload part they were made of.
    private var identityKeys: (keys: [UInt32: IdentityKey], version: Int, fixedVersion: Int, workload: [UInt32: IdentityKey])
        = ([:], 0, -1, [:])

    struct PolicyOrder {
        var tiers: [String]
        /// Per direction, each policy's place in its tier's list (-1: not in that direction).
        var rank: [Policy.Direction: [Int]]
        var version: Int
    }

    /// Per subject and direction, the policies that apply, by tier (as
    /// `(index into the tiers, policy indices in order)`), for one order.
    typealias Applying = [Policy.Direction: [(tier: Int, policies: [Int])]]
    private var applyingCache: (orderVersion: Int, bySubject: [Int: Applying]) = (0, [:])
    /// The policies of `order`, by what their subjects must have.
    private var applyIndex = ApplyIndex()
    /// Each subject's program inputs (see `EndpointEntry.inputs`), the same
    /// array while they do not change, so endpoints compare them at once.
    private var subjectInputs: [Int: [[Int]]] = [:]

    struct OrderKey: Equatable {
        var order: Double
        var name: String
        var types: Set<Policy.Direction>
        var tier: String
        init(_ p: Policy) {
            order = p.order ?? .infinity
            name = p.qualifiedName
            types = p.types
            tier = p.tier
        }
    }

    /// What `EndpointMatch.matches` reads of a workload.
    struct Subject: Hashable {
        var namespace: String
        var namespaceLabels: [String: String]
        var serviceAccount: String
        var labels: [String: String]
        init(_ w: Workload) {
            namespace = w.namespace
            namespaceLabels = w.namespaceLabels
            serviceAccount = w.pod.serviceAccount
            labels = w.labels
        }
    }

    final class PolicyEntry {
        let policy: Policy
        let version: Int
        /// Whether it applies to each subject, by subject number.
        var applies: [Bool] = []
        /// Its rules per direction, when they do not depend on the endpoint.
        var rules: [Policy.Direction: [ProgramRule]] = [:]
        var seen = 0
        var used = 0
        init(_ policy: Policy, version: Int) {
            self.policy = policy
            self.version = version
        }
    }

    struct EndpointEntry {
        var workload: Workload
        /// Per direction: the order version, then per tier its index and the
        /// versions of the policies that apply.
        var inputs: [[Int]]
        var programs: [ProgramEntry?]
    }

    final class ProgramEntry {
        let program: RuleProgram
        let ruleIDs: [UInt32]
        let matchers: Set<Int>
        /// Its table for one version of the identity keys, and the rule set id it had.
        var table: (keysVersion: Int, entries: [TableEntry], ruleset: Allocated?)?
        var used = 0
        init(_ program: RuleProgram) {
            self.program = program
            ruleIDs = program.tiers.flatMap { [$0.defaultRuleID] + $0.rules.map(\.id) }
            matchers = program.matchers
        }
    }

    /// Regions' identity keys, valid for one set of matchers and network sets.
    struct RegionCache {
        var matchers: [Int]
        /// Regions that are not a workload's address: network set and matcher nets, and 0.0.0.0/0.
        var fixed: [CIDR]
        var fixedSet: Set<CIDR>
        /// The fixed regions' identities, with the workload addresses that
        /// took some of their ranges away.
        var fixedPart: (shadowed: Set<CIDR>, part: RegionPart)?
        var workloadPart: RegionPart?
        var index: MatcherIndex?
        /// The last result, with the workloads it was computed for: equal
        /// workloads (and matchers) give the same regions and identities.
        var last: RegionResult?
    }

    struct RegionPart {
        var keys: [UInt32: IdentityKey] = [:]
        var ids: [IdentityKey: Allocated] = [:]
        var allocations: [Allocations.Key: UInt32] = [:]
        var identities: [UInt32: IdentityInfo] = [:]
        var ipcache: [IPCacheEntry] = []
        /// Each region's key and member name, with the workload they were computed for.
        var cached: [CIDR: (workload: Workload?, key: IdentityKey, member: String)] = [:]
    }

    struct RegionResult {
        var workloads: [Workload]
        var local: Set<String>
        var keys: [UInt32: IdentityKey]
        /// The part of `keys` that workload addresses have.
        var workloadKeys: [UInt32: IdentityKey]
        var ipcache: [IPCacheEntry]
        var identities: [UInt32: IdentityInfo]
        /// The fixed regions' identity allocations (at `fixedVersion`), and the workloads'.
        var fixedAllocations: [Allocations.Key: UInt32]
        var fixedVersion: Int
        var workloadAllocations: [Allocations.Key: UInt32]
        /// The identity of each workload address.
        var identityOf: [CIDR: UInt32]
    }

    /// The rules of the programs in use, counted by program: a compile
    /// adds the rules of programs that came into use and drops those of
    /// programs that went out of it.
    private var programsInUse: [ObjectIdentifier: ProgramEntry] = [:]
    private var ruleUses: [UInt32: Int] = [:]
    /// How many programs in use read each matcher, and those matchers in order.
    private var matcherUses: [Int: Int] = [:]
    private var usedMatchers: [Int] = []
    private var rulesInUse: [UInt32: RuleInfo] = [:]
    private var ruleAllocations: [Allocations.Key: UInt32] = [:]

    /// Decision functions by their inputs, with the compile that last used
    /// each: a changed program evaluates again only the peer classes whose
    /// rules changed (a policy change at 10k policies evaluated 500).
    private var decisions: [DecisionInputs: (function: DecisionFunction, used: Int)] = [:]
    /// How many of them this compile used.
    private var decisionsUsed = 0

    /// Identities by the matchers they satisfy, for one version of the identity keys.
    private var identitiesByMatcher: (version: Int, ids: [Int: [UInt32]])?

    struct MatcherIndex {
        var byNet: [CIDR: [Int]] = [:]
        var everywhere: [Int] = []    // no nets: may match any region
        var workloadOnly: [Int] = []  // no nets, need a workload
        var setsByNet: [CIDR: [NetworkSetPeer]] = [:]
    }

    /// `recovering`: the allocations of the state the dataplane holds.
    public init(recovering: Allocations = Allocations()) {
        allocated = recovering
    }

    struct IdentityKey: Hashable {
        var matched: [Int32]
        var ports: [NamedPort]
        /// Workloads and plain address ranges never share an identity, so
        /// "world" stays world in diagnostics.
        var workload: Bool
    }

    /// The id of a content: the one it has (in memory or recovered), or the next.
    private func allocate(_ kind: Allocations.Kind, _ digest: Digest) -> Allocated {
        let key = Allocations.Key(kind, digest)
        if let id = live.ids[key] ?? allocated.ids[key] {
            live.ids[key] = id
            return Allocated(id: id, digest: digest)
        }
        let id = live.next(kind)
        precondition(id < kind.limit, "\(kind) ids exhausted")
        live.next[kind] = id + 1
        live.ids[key] = id
        return Allocated(id: id, digest: digest)
    }

    /// Whether an id remembered from an earlier compile is still bound: in
    /// force after the last compile, or used by this one.
    private func isLive(_ a: Allocated, _ kind: Allocations.Kind) -> Bool {
        let key = Allocations.Key(kind, a.digest)
        return (live.ids[key] ?? allocated.ids[key]) == a.id
    }

    private func remember(_ a: Allocated, _ kind: Allocations.Kind) -> UInt32 {
        live.ids[Allocations.Key(kind, a.digest)] = a.id
        return a.id
    }

    private func matcher(_ e: EntityRule) -> Int? {
        let peer = e.peerPart
        if peer.isEmpty { return nil }
        if let n = matcherNumbers[peer] { return n }
        let number = matcherList.count
        matcherNumbers[peer] = number
        matcherList.append(peer)
        matcherTexts.append(CanonicalText.matcher(peer))
        return number
    }

    /// Keeps the entries of a cache that `keep` says; the storage it drops
    /// (tens of thousands of entries after a large load: the first change
    /// after one spent 8 ms freeing them) is freed on a background queue,
    /// off the path of the change.
    static func prune<K, V>(_ cache: inout [K: V], keeping keep: (K, V) -> Bool) {
        let old = cache
        cache = old.filter { keep($0.key, $0.value) }
        DeferredRelease.release(old)
    }

    public func compile(_ resources: ResourceSet, options: Options = Options()) -> CompiledState {
        stamp += 1
        let env = Environment(namespaces: resources.namespaces, profiles: resources.profiles, tiers: resources.tiers,
                              networkSets: resources.networkSets, nodeName: options.nodeName)
        if env != environment {
            environment = env
            workloadCache = [:]
            order = nil
            policyCache = [:]
            lastEntries = []
            lastStamps = []
            subjectNumbers = [:]
            subjects = []
            subjectInputs = [:]
            endpointCache = [:]
            programs = [:]
            regions = nil
        }
        var nextWorkloads: [String: Workload] = [:]
        // Sorted by the dictionary's keys (each pod's key): `Pod.key` builds
        // its string on every call, which made this sort a fifth of a compile.
        let workloads = resources.pods.sorted { $0.key < $1.key }.map { key, pod in
            assert(key == pod.key, "pods are keyed by Pod.key")
            let w = workloadCache[key].flatMap { $0.pod == pod ? $0 : nil }
                ?? Workload(pod: pod, namespace: resources.namespaces[pod.namespace], profiles: resources.profiles)
            nextWorkloads[key] = w
            return w
        }
        workloadCache = nextWorkloads
        let local = workloads.filter { w in
            w.interface != nil && w.ip != nil && (options.nodeName == nil || w.pod.nodeName == nil || w.pod.nodeName == options.nodeName)
        }
        var state = CompiledState()
        live = Allocations(next: allocated.next)

        let networkSets = resources.networkSets.map {
            NetworkSetPeer(set: $0, namespaceLabels: $0.namespace.map { Workload.namespaceLabels($0, resources.namespaces[$0]) } ?? [:])
        }
        // Each tier's policies in evaluation order, per direction, sorted
        // once (not per endpoint), as indices into resources.policies.
        // Policies: a changed one is a new entry (a new version). Each is
        // first compared with the one at its place in the last compile: the
        // policies of a change come in the same order but for a few.
        let policies = resources.policies
        var entries: [PolicyEntry] = []
        var sameOrder = order != nil && policies.count == lastEntries.count
        var changed: [Int] = [] // indices of new entries, while sameOrder
        // Equal stamps (from one ResourceCache): the same policy, not compared.
        let stamps = resources.policyStamps.values.count == policies.count ? resources.policyStamps.values : []
        let lastStamps = self.lastStamps.count == lastEntries.count ? self.lastStamps : []
        if !stamps.isEmpty && stamps == lastStamps {
            // The same policies as the last compile (a pod changed): its
            // entries, without a look at each of them.
            entries = lastEntries
        } else {
            entries.reserveCapacity(policies.count)
            for i in policies.indices {
                let entry: PolicyEntry
                if i < lastEntries.count,
                   (i < stamps.count && i < lastStamps.count && stamps[i] == lastStamps[i]) || lastEntries[i].policy == policies[i] {
                    entry = lastEntries[i]
                } else {
                    let policy = policies[i]
                    let name = policy.qualifiedName
                    if let cached = policyCache[name], cached.policy == policy {
                        entry = cached
                    } else {
                        versions += 1
                        entry = PolicyEntry(policy, version: versions)
                        policyCache[name] = entry
                    }
                    if sameOrder && OrderKey(lastEntries[i].policy) != OrderKey(policy) { sameOrder = false }
                    changed.append(i)
                }
                entry.seen = stamp
                entries.append(entry)
            }
            lastEntries = entries
            self.lastStamps = stamps
            if policyCache.count != entries.count { Self.prune(&policyCache) { $1.seen == stamp } }
        }
        // Each tier's policies in evaluation order, per direction, sorted
        // once (not per endpoint), as indices into resources.policies.
        if !sameOrder {
            let keys = policies.map(OrderKey.init)
            var byTier: [String: [Policy.Direction: [Int]]] = [:]
            for i in policies.indices.sorted(by: { (keys[$0].order, keys[$0].name) < (keys[$1].order, keys[$1].name) }) {
                for direction in Policy.Direction.allCases where policies[i].types.contains(direction) {
                    byTier[policies[i].tier, default: [:]][direction, default: []].append(i)
                }
            }
            var rank: [Policy.Direction: [Int]] = [:]
            for direction in Policy.Direction.allCases {
                var r = [Int](repeating: -1, count: policies.count)
                for lists in byTier.values { for (place, i) in (lists[direction] ?? []).enumerated() { r[i] = place } }
                rank[direction] = r
            }
            func tierOrder(_ name: String) -> (Double, String) { (resources.tiers[name]?.order ?? .infinity, name) }
            versions += 1
            order = PolicyOrder(tiers: byTier.keys.sorted { tierOrder($0) < tierOrder($1) }, rank: rank, version: versions)
            applyIndex = ApplyIndex(policies.map(\.appliesTo))
        } else {
            for i in changed { applyIndex.update(i, policies[i].appliesTo) }
        }
        let tierNames = order!.tiers, orderVersion = order!.version

        // Which policies apply to each local endpoint: evaluated once per
        // policy and subject (the labels and namespace selectors read).
        var subjectOf: [Int] = []
        for w in local {
            let subject = Subject(w)
            if let n = subjectNumbers[subject] {
                subjectOf.append(n)
            } else {
                subjectNumbers[subject] = subjects.count
                subjectOf.append(subjects.count)
                subjects.append(w)
            }
        }
        func applies(_ entry: PolicyEntry, _ subject: Int) -> Bool {
            while entry.applies.count <= subject { entry.applies.append(entry.policy.appliesTo.matches(subjects[entry.applies.count])) }
            return entry.applies[subject]
        }
        // Kept per subject while the order is: then only new entries are
        // evaluated, each put in (or taken out of) its place.
        if applyingCache.orderVersion != orderVersion { applyingCache = (orderVersion, [:]) }
        var applyingBySubject: [Int: Applying] = [:]
        for subject in Set(subjectOf) {
            var perDirection: Applying
            if let cached = applyingCache.bySubject[subject] {
                perDirection = cached
                for i in changed {
                    // A policy in no direction (types: []) is in no list, and
                    // its tier may be in none either.
                    for direction in Policy.Direction.allCases where order!.rank[direction]![i] >= 0 {
                        let t = tierNames.firstIndex(of: entries[i].policy.tier)!
                        Self.place(i, tier: t, applies: applies(entries[i], subject), rank: order!.rank[direction]!,
                                   in: &perDirection[direction, default: []])
                        if perDirection[direction]!.isEmpty { perDirection[direction] = nil }
                    }
                }
            } else {
                perDirection = [:]
                let applying = applyIndex.candidates(subjects[subject]).filter { applies(entries[$0], subject) }
                let tierOf = Dictionary(uniqueKeysWithValues: tierNames.enumerated().map { ($1, $0) })
                for direction in Policy.Direction.allCases {
                    let rank = order!.rank[direction]!
                    var byTier: [Int: [Int]] = [:]
                    for i in applying where rank[i] >= 0 { byTier[tierOf[entries[i].policy.tier]!, default: []].append(i) }
                    for t in byTier.keys.sorted() {
                        perDirection[direction, default: []].append((t, byTier[t]!.sorted { rank[$0] < rank[$1] }))
                    }
                }
            }
            applyingBySubject[subject] = perDirection
            // Their cached rules stay: some program in force holds their ids.
            for list in perDirection.values { for (_, indices) in list { for i in indices { entries[i].used = stamp } } }
            let inputs = Policy.Direction.allCases.map { direction in
                [orderVersion] + (perDirection[direction] ?? []).flatMap { [-1 - $0.tier] + $0.policies.map { entries[$0].version } }
            }
            if subjectInputs[subject] != inputs { subjectInputs[subject] = inputs }
        }

        applyingCache.bySubject = applyingBySubject

        // 1. Rule programs per local endpoint and direction, rebuilt only
        // for endpoints whose inputs changed.
        var nextEndpoints: [String: EndpointEntry] = [:]
        var endpointPrograms: [(Workload, [ProgramEntry?])] = []
        // Endpoints of one subject have the same inputs, and the same
        // programs unless a rule reads the local endpoint: built once.
        var builtBySubject: [Int: [ProgramEntry?]] = [:]
        for (w, subject) in zip(local, subjectOf) {
            let applying = applyingBySubject[subject]!, inputs = subjectInputs[subject]!
            var entry: EndpointEntry
            if let cached = endpointCache[w.key], cached.inputs == inputs, cached.workload == w {
                entry = cached
            } else if let shared = builtBySubject[subject] {
                entry = EndpointEntry(workload: w, inputs: inputs, programs: shared)
            } else {
                let built = Policy.Direction.allCases.map { direction in
                    program(for: w, direction: direction, applying: applying[direction] ?? [], tierNames: tierNames,
                            entries: entries, resources: resources, networkSets: networkSets)
                }
                entry = EndpointEntry(workload: w, inputs: inputs, programs: built.map { $0.program.map(intern) })
                if !built.contains(where: \.readsLocal) { builtBySubject[subject] = entry.programs }
            }
            for p in entry.programs { p?.used = stamp }
            nextEndpoints[w.key] = entry
            endpointPrograms.append((w, entry.programs))
        }
        endpointCache = nextEndpoints
        let usedPrograms = programs.values.filter { $0.used == stamp }
        for entry in entries where entry.used != stamp { entry.rules = [:] } // their ids are released below
        if programs.count > 2 * usedPrograms.count + 16 { Self.prune(&programs) { $1.used == stamp } }
        countRules(of: usedPrograms)
        state.rules = rulesInUse
        if ruleInfos.count > 2 * state.rules.count + 64 { Self.prune(&ruleInfos) { key, _ in state.rules[key] != nil } }
        if ruleIDOf.count > 2 * state.rules.count + 64 { Self.prune(&ruleIDOf) { state.rules[$1.id] != nil } }

        // 2. Regions of address space and their identities.
        let regionResult = assignIdentities(workloads: workloads, networkSets: networkSets,
                                            matchers: usedMatchers, local: Set(local.map(\.key)), state: &state)
        let identities = regionResult.keys, identityOf = regionResult.identityOf
        // An unchanged fixed part (tens of thousands of keys) has the same
        // keys: then only the workload part is compared.
        let sameKeys = regionResult.fixedVersion == identityKeys.fixedVersion
            ? regionResult.workloadKeys == identityKeys.workload : identities == identityKeys.keys
        if !sameKeys {
            versions += 1
            identityKeys = (identities, versions, regionResult.fixedVersion, regionResult.workloadKeys)
        } else {
            (identityKeys.fixedVersion, identityKeys.workload) = (regionResult.fixedVersion, regionResult.workloadKeys)
        }

        // 3. Rule sets, shared by content (equal tables have one digest, so
        // one id); a program's table and id are kept while the identities are.
        var rulesetAllocations: [Allocations.Key: UInt32] = [:]
        func rulesetID(_ program: ProgramEntry?) -> UInt32 {
            guard let program else { return ReservedRuleset.allowAll }
            if program.table?.keysVersion != identityKeys.version {
                program.table = (identityKeys.version, table(for: program.program, identities: identities), nil)
            }
            let table = program.table!.entries
            let a = program.table!.ruleset.flatMap { isLive($0, .ruleset) ? $0 : nil }
                ?? allocate(.ruleset, Digest.sha256(CanonicalText.ruleset(table)))
            program.table!.ruleset = a
            if state.rulesets[a.id] == nil { state.rulesets[a.id] = table }
            rulesetAllocations[Allocations.Key(.ruleset, a.digest)] = a.id
            return remember(a, .ruleset)
        }
        for (w, programs) in endpointPrograms {
            state.endpoints.append(CompiledEndpoint(
                workload: w.key, interface: w.interface!, ip: w.ip!,
                identity: identityOf[CIDR(w.ip!, 32)]!,
                ingressRuleset: rulesetID(programs[0]), egressRuleset: rulesetID(programs[1])))
        }
        if decisions.count > 2 * decisionsUsed + 4096 { Self.prune(&decisions) { $1.used == stamp } }
        decisionsUsed = 0
        finishAllocations(regionResult, others: regionResult.workloadAllocations.merging(rulesetAllocations) { a, _ in a },
                          state: &state)
        return state
    }

    /// The allocations of this compile: its rules, identities and rule
    /// sets. After a compile that built them, they are the last ones with
    /// only the keys this compile touched or whose group changed looked at
    /// again (tens of thousands of rules stay as they were), and the
    /// difference goes to the dataplane with them.
    private func finishAllocations(_ regions: RegionResult, others: [Allocations.Key: UInt32], state: inout CompiledState) {
        let fixed = regions.fixedAllocations
        var ids: [Allocations.Key: UInt32]
        let id = Self.nextCompileID.add(1, ordering: .relaxed).oldValue
        if let last = lastGroups, let since = lastCompileID {
            ids = allocated.ids
            var changes = CompiledState.AllocationChanges(since: since)
            var keys = Set(live.ids.keys).union(changedRuleKeys).union(last.other.keys).union(others.keys)
            if last.fixedVersion != regions.fixedVersion { keys.formUnion(last.fixed.keys); keys.formUnion(fixed.keys) }
            for key in keys {
                let wanted = ruleAllocations[key] ?? fixed[key] ?? others[key]
                guard ids[key] != wanted else { continue }
                ids[key] = wanted
                if let wanted { changes.set[key] = wanted } else { changes.removed.append(key) }
            }
            state.allocationChanges = changes
        } else {
            ids = ruleAllocations.merging(fixed) { a, _ in a }.merging(others) { a, _ in a }
        }
        changedRuleKeys = []
        lastGroups = (regions.fixedVersion, fixed, others)
        lastCompileID = id
        live.ids = ids
        allocated = live
        state.allocations = live
        state.compileID = id
    }

    /// An endpoint's program in one direction (nil when nothing but the
    /// built-in allow applies: not isolated), and whether any of its rules
    /// read the endpoint itself (else every endpoint of its subject has it).
    private func program(for w: Workload, direction: Policy.Direction, applying: [(tier: Int, policies: [Int])], tierNames: [String],
                         entries: [PolicyEntry], resources: ResourceSet,
                         networkSets: [NetworkSetPeer]) -> (program: RuleProgram?, readsLocal: Bool) {
        var tiers: [TierProgram] = []
        var readsLocal = false
        for (t, indices) in applying {
            let tierName = tierNames[t]
            var rules: [ProgramRule] = []
            for i in indices {
                let entry = entries[i]
                entry.used = stamp
                if let cached = entry.rules[direction] {
                    rules += cached
                    continue
                }
                let policy = entry.policy
                var own: [ProgramRule] = []
                var shared = true
                for rule in policy.rules(direction) {
                    shared = shared && !rule.dependsOnLocal(direction)
                    if let r = programRule(rule, owner: policy.qualifiedName, tier: policy.tier, direction: direction,
                                           local: w, networkSets: networkSets) {
                        own.append(r)
                    }
                }
                if shared { entry.rules[direction] = own } else { readsLocal = true }
                rules += own
            }
            let defaultPass = resources.tiers[tierName]?.defaultPass ?? false
            let defaultID = ruleID(RuleInfo(policy: "tier \(tierName)", tier: tierName, direction: direction.rawValue,
                                            index: nil, action: defaultPass ? "Pass" : "Deny", summary: "end of tier: no rule matched"))
            tiers.append(TierProgram(name: tierName, defaultPass: defaultPass, defaultRuleID: defaultID, rules: rules))
        }
        // Nothing but the built-in allow: the endpoint is not isolated. (A
        // `cni` endpoint has no built-in profile: whatever its profiles do
        // not allow is denied, when they are missing too.)
        if tiers.isEmpty && w.pod.orchestrator == .k8s && !w.profileNames.contains(where: { resources.profiles[$0] != nil }) {
            return (nil, readsLocal)
        }
        // Profiles decide what no tier did, as one last tier that denies
        // when none of their rules match.
        var profileRules: [ProgramRule] = []
        for name in w.profileNames {
            if let profile = resources.profiles[name] {
                for rule in profile.rules(direction) {
                    readsLocal = readsLocal || rule.dependsOnLocal(direction)
                    if let r = programRule(rule, owner: "profile \(name)", tier: "profiles", direction: direction,
                                           local: w, networkSets: networkSets) {
                        profileRules.append(r)
                    }
                }
            } else if w.pod.orchestrator == .k8s, name.hasPrefix("kns.") {
                let id = ruleID(RuleInfo(policy: "profile \(name)", tier: "profiles", direction: direction.rawValue,
                                         index: nil, action: "Allow", summary: "namespace profile: allow"))
                profileRules.append(ProgramRule(id: id, action: .allow))
            }
        }
        let profileDefault = ruleID(RuleInfo(policy: "profiles", tier: "profiles", direction: direction.rawValue, index: nil,
                                             action: "Deny", summary: "no profile rule matched"))
        tiers.append(TierProgram(name: "profiles", defaultPass: false, defaultRuleID: profileDefault, rules: profileRules))
        return (RuleProgram(tiers: tiers), readsLocal)
    }

    /// Puts policy `i` of tier `tier` in its place in one direction's
    /// applying lists (ordered by tier, then by rank), or takes it out.
    static func place(_ i: Int, tier: Int, applies: Bool, rank: [Int], in lists: inout [(tier: Int, policies: [Int])]) {
        guard let k = lists.firstIndex(where: { $0.tier >= tier }), lists[k].tier == tier else {
            if applies { lists.insert((tier, [i]), at: lists.firstIndex { $0.tier > tier } ?? lists.count) }
            return
        }
        var lo = 0, hi = lists[k].policies.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if rank[lists[k].policies[mid]] < rank[i] { lo = mid + 1 } else { hi = mid }
        }
        let present = lo < lists[k].policies.count && lists[k].policies[lo] == i
        if applies && !present { lists[k].policies.insert(i, at: lo) }
        if !applies && present { lists[k].policies.remove(at: lo) }
        if lists[k].policies.isEmpty { lists.remove(at: k) }
    }

    /// Brings the rules and matchers in use to those of `used`, counting
    /// each one's programs.
    private func countRules(of used: [ProgramEntry]) {
        let next = Dictionary(uniqueKeysWithValues: used.map { (ObjectIdentifier($0), $0) })
        // A matcher whose last program goes and that another program brings
        // back (a changed policy) is still in use: no new order to sort.
        var matchersChanged = false
        var zeroed: [Int] = []
        for (key, p) in programsInUse where next[key] == nil {
            for m in p.matchers {
                matcherUses[m]! -= 1
                if matcherUses[m] == 0 { zeroed.append(m) }
            }
            for id in p.ruleIDs {
                ruleUses[id]! -= 1
                if ruleUses[id] == 0 {
                    ruleUses[id] = nil
                    rulesInUse[id] = nil
                    let key = Allocations.Key(.rule, ruleInfos[id]!.digest)
                    ruleAllocations[key] = nil
                    changedRuleKeys.append(key)
                }
            }
        }
        for (key, p) in next where programsInUse[key] == nil {
            for m in p.matchers {
                if let uses = matcherUses[m] {
                    matcherUses[m] = uses + 1
                } else {
                    matcherUses[m] = 1
                    matchersChanged = true
                }
            }
            for id in p.ruleIDs {
                ruleUses[id, default: 0] += 1
                if ruleUses[id] == 1 {
                    let r = ruleInfos[id]!
                    rulesInUse[id] = r.info
                    let key = Allocations.Key(.rule, r.digest)
                    ruleAllocations[key] = id
                    changedRuleKeys.append(key)
                }
            }
        }
        programsInUse = next
        for m in zeroed where matcherUses[m] == 0 {
            matcherUses[m] = nil
            matchersChanged = true
        }
        if matchersChanged { usedMatchers = matcherUses.keys.sorted() }
    }

    /// One entry per distinct program: equal programs share their table and rule set.
    private func intern(_ program: RuleProgram) -> ProgramEntry {
        if let known = programs[program] { return known }
        let entry = ProgramEntry(program)
        programs[program] = entry
        return entry
    }

    // MARK: Rules

    private func ruleID(_ info: RuleInfo) -> UInt32 {
        let a = ruleIDOf[info].flatMap { isLive($0, .rule) ? $0 : nil } ?? allocate(.rule, Digest.sha256(CanonicalText.rule(info)))
        ruleIDOf[info] = a
        ruleInfos[a.id] = (info, a.digest)
        return remember(a, .rule)
    }

    private func programRule(_ rule: Rule, owner: String, tier: String, direction: Policy.Direction, local: Workload,
                             networkSets: [NetworkSetPeer]) -> ProgramRule? {
        let localSide = direction == .ingress ? rule.destination : rule.source
        let peerSide = direction == .ingress ? rule.source : rule.destination
        // IPv6 rules never match this IPv4 dataplane.
        if rule.ipVersion == 6 || rule.proto == .icmpv6 { return nil }
        // Conditions on the local endpoint are decided now, per endpoint.
        // The endpoint's own address is in the network sets that contain it,
        // as it would be in the IP sets Calico builds from selectors.
        if !localSide.peerPart.isEmpty {
            let own = CIDR(local.ip!, 32)
            let sets = networkSets.filter { $0.set.nets.contains { $0.contains(own) } }
            guard localSide.peerPart.matchesPeer(Peer(cidr: own, workload: local, networkSets: sets)) else { return nil }
        }
        func terms(_ ports: [PortMatch]) -> PortTerms? {
            if ports.isEmpty { return nil }
            var t = PortTerms(ranges: [], names: [])
            for p in ports {
                switch p {
                case let .range(lo, hi): t.ranges.append(UInt32(lo)...UInt32(hi))
                case let .named(name):
                    if direction == .ingress {
                        // The destination is us: resolve against our own ports now.
                        for np in local.namedPorts(name, proto: rule.proto) { t.ranges.append(UInt32(np.port)...UInt32(np.port)) }
                    } else {
                        t.names.append(name)
                    }
                }
            }
            return t
        }
        let info = RuleInfo(policy: owner, tier: tier, direction: direction.rawValue,
                            index: rule.index, action: rule.action.rawValue, summary: summarize(rule, direction: direction))
        return ProgramRule(
            id: ruleID(info), action: rule.action, proto: rule.proto, notProto: rule.notProto,
            matcher: matcher(peerSide), ports: terms(rule.destination.ports), notPorts: terms(rule.destination.notPorts),
            icmp: rule.icmp.map(icmpSet), notICMP: rule.notICMP.map(icmpSet))
    }

    // MARK: Identities

    /// Splits address space into regions no rule CIDR crosses (every rule
    /// CIDR, every workload /32, and 0.0.0.0/0), and gives regions that
    /// every rule treats alike the same identity. Returns each identity's
    /// key: the matchers it satisfies and its named ports. A region's key
    /// is computed again only when the region or the matchers change.
    private func assignIdentities(workloads: [Workload], networkSets: [NetworkSetPeer], matchers: [Int],
                                  local: Set<String>, state: inout CompiledState) -> RegionResult {
        if regions?.matchers != matchers {
            var fixed: [CIDR] = []
            var seen = Set<CIDR>()
            for ns in networkSets { for net in ns.set.nets where seen.insert(net).inserted { fixed.append(net) } }
            for i in matchers {
                for cidr in matcherList[i].nets + matcherList[i].notNets where seen.insert(cidr).inserted { fixed.append(cidr) }
            }
            if seen.insert(.any).inserted { fixed.append(.any) }
            // In address order, not matcher order (matcher numbers are this
            // process's own): new identities get the same ids in any process.
            regions = RegionCache(matchers: matchers, fixed: fixed.sorted(), fixedSet: seen)
        }
        if let last = regions!.last, last.workloads == workloads, last.local == local {
            state.ipcache = last.ipcache
            state.identities = last.identities
            return last
        }
        // Workloads and plain ranges never share an identity, so the regions
        // of workload addresses and the fixed ones are two parts: the fixed
        // part is computed again only when a workload takes or leaves one of
        // its ranges (a /32 that is also a workload's address).
        var workloadRegions: [Peer] = []
        var seen = Set<CIDR>()
        for w in workloads {
            guard let ip = w.ip else { continue }
            let cidr = CIDR(ip, 32)
            if seen.insert(cidr).inserted { workloadRegions.append(Peer(cidr: cidr, workload: w)) }
        }
        let shadowed = seen.filter(regions!.fixedSet.contains)
        if regions!.fixedPart?.shadowed != shadowed {
            let part = regionPart(regions!.fixed.filter { !shadowed.contains($0) }.map { Peer(cidr: $0, workload: nil) },
                                  previous: regions!.fixedPart?.part, ids: fixedIdentityIDs, local: local, networkSets: networkSets)
            regions!.fixedPart = (shadowed, part)
            fixedIdentityIDs = part.ids
            fixedVersion += 1
        }
        let fixed = regions!.fixedPart!.part
        let workloadPart = regionPart(workloadRegions, previous: regions!.workloadPart, ids: workloadIdentityIDs, local: local,
                                      networkSets: networkSets)
        regions!.workloadPart = workloadPart
        workloadIdentityIDs = workloadPart.ids

        state.ipcache = workloadPart.ipcache + fixed.ipcache
        state.identities = fixed.identities.merging(workloadPart.identities) { a, _ in a }
        regions!.last = RegionResult(workloads: workloads, local: local, keys: fixed.keys.merging(workloadPart.keys) { a, _ in a },
                                     workloadKeys: workloadPart.keys,
                                     ipcache: state.ipcache, identities: state.identities,
                                     fixedAllocations: fixed.allocations, fixedVersion: fixedVersion,
                                     workloadAllocations: workloadPart.allocations,
                                     identityOf: Dictionary(uniqueKeysWithValues: workloadPart.ipcache.map { ($0.cidr, $0.identity) }))
        return regions!.last!
    }

    /// The identities of some regions, each region's key taken from
    /// `previous` when its workload is the same, each id from `ids` (those
    /// in force) when its key is known there.
    private func regionPart(_ peers: [Peer], previous: RegionPart?, ids: [IdentityKey: Allocated], local: Set<String>,
                            networkSets: [NetworkSetPeer]) -> RegionPart {
        var part = RegionPart()
        var members: [UInt32: [String]] = [:]
        part.cached.reserveCapacity(peers.count)
        for region in peers {
            let key: IdentityKey, member: String
            if let cached = previous?.cached[region.cidr], cached.workload == region.workload {
                (key, member) = (cached.key, cached.member)
            } else {
                key = identityKey(region, networkSets: networkSets)
                member = region.workload?.key ?? region.cidr.description
            }
            part.cached[region.cidr] = (region.workload, key, member)
            let id: UInt32
            if key.matched.isEmpty && !key.workload {
                id = ReservedIdentity.world
            } else if let known = part.ids[key] {
                id = known.id
            } else {
                let a = ids[key] ?? allocate(.identity, Digest.sha256(CanonicalText.identity(
                    matchers: key.matched.map { matcherTexts[Int($0)] }, ports: key.ports, workload: key.workload)))
                part.ids[key] = a
                part.allocations[Allocations.Key(.identity, a.digest)] = a.id
                id = remember(a, .identity)
            }
            part.keys[id] = key
            members[id, default: []].append(member)
            part.ipcache.append(IPCacheEntry(cidr: region.cidr, identity: id,
                                             localWorkload: region.workload.map { local.contains($0.key) } ?? false))
        }
        part.identities = members.mapValues { IdentityInfo(members: $0) }
        return part
    }

    /// The matchers a region satisfies (candidates come from an index, so
    /// the work is proportional to matches, not matchers), and its ports.
    private func identityKey(_ region: Peer, networkSets: [NetworkSetPeer]) -> IdentityKey {
        if regions!.index == nil {
            var index = MatcherIndex()
            for i in regions!.matchers {
                let m = matcherList[i]
                for net in m.nets { index.byNet[net, default: []].append(i) }
                if m.nets.isEmpty {
                    if m.endpoints != nil || !m.serviceAccountNames.isEmpty { index.workloadOnly.append(i) } else { index.everywhere.append(i) }
                }
            }
            for ns in networkSets { for net in ns.set.nets { index.setsByNet[net, default: []].append(ns) } }
            regions!.index = index
        }
        let index = regions!.index!
        var region = region
        // Each region lies in the network sets whose CIDRs contain it.
        if !index.setsByNet.isEmpty {
            for len in stride(from: region.cidr.prefixLength, through: 0, by: -1) {
                region.networkSets += index.setsByNet[CIDR(region.cidr.address, len)] ?? []
            }
        }
        var candidates = index.everywhere
        for len in stride(from: region.cidr.prefixLength, through: 0, by: -1) {
            if let list = index.byNet[CIDR(region.cidr.address, len)] { candidates += list }
        }
        if region.workload != nil || !region.networkSets.isEmpty { candidates += index.workloadOnly }
        let matched = Set(candidates).filter { matcherList[$0].matchesPeer(region) }
        return IdentityKey(matched: matched.map(Int32.init).sorted(), ports: region.workload?.pod.ports ?? [],
                           workload: region.workload != nil)
    }

    // MARK: Tables

    /// The LPM entries of one rule set. Identities are grouped by what this
    /// program can tell apart, each group is evaluated once, and identities
    /// whose verdicts all equal the rule set's default get no entry.
    private func table(for program: RuleProgram, identities: [UInt32: IdentityKey]) -> [TableEntry] {
        let relevant = program.matchers
        var groups: [IdentityKey: [UInt32]] = [:]
        if program.usesPeerPortNames {
            for (id, key) in identities {
                let projection = IdentityKey(matched: key.matched.filter { relevant.contains(Int($0)) }, ports: key.ports, workload: false)
                groups[projection, default: []].append(id)
            }
        } else {
            // Only identities that satisfy one of the program's matchers
            // differ from "none": found through the index, so the work is
            // proportional to them, not to all identities.
            if identitiesByMatcher?.version != identityKeys.version {
                var index: [Int: [UInt32]] = [:]
                for (id, key) in identities { for m in key.matched { index[Int(m), default: []].append(id) } }
                identitiesByMatcher = (identityKeys.version, index)
            }
            let index = identitiesByMatcher!.ids
            var projected: [UInt32: [Int32]] = [:]
            for m in relevant.sorted() { for id in index[m] ?? [] { projected[id, default: []].append(Int32(m)) } }
            for (id, matched) in projected { groups[IdentityKey(matched: matched, ports: [], workload: false), default: []].append(id) }
            if projected.count < identities.count {
                groups[IdentityKey(matched: [], ports: [], workload: false)] = identities.keys.filter { projected[$0] == nil }
            }
        }
        let index = ProgramIndex(program)
        let defaults = program.tiers.map { DecisionInputs.TierDefault(pass: $0.defaultPass, ruleID: $0.defaultRuleID) }
        let functions = groups.keys.map { key in
            let candidates = index.candidates(matched: key.matched.map(Int.init))
            let inputs = DecisionInputs(defaults: defaults, candidates: candidates, peerPorts: key.ports)
            if let known = decisions[inputs] {
                if known.used != stamp { decisionsUsed += 1 }
                decisions[inputs]!.used = stamp
                return (key, known.function)
            }
            let function = DecisionFunction.evaluate(program.tiers, candidates: candidates, peerPorts: key.ports)
            decisions[inputs] = (function, stamp)
            decisionsUsed += 1
            return (key, function)
        }
        // The most common decision becomes the default; ties are broken by
        // the decision itself, so equal inputs give equal tables in every
        // process (dictionary order differs between processes).
        func rank(_ f: (IdentityKey, DecisionFunction)) -> (Int, UInt8, UInt32, Int, Int) {
            let d = f.1.other
            return (groups[f.0]!.count, d.verdict.rawValue, d.ruleID, d.log ? 1 : 0, d.byDefault ? 1 : 0)
        }
        let fallback = functions.max { rank($0) < rank($1) }!.1.other
        var entries = [TableEntry(identity: nil, proto: nil, decision: fallback)]
        for (key, function) in functions where !function.isConstant(fallback) {
            for id in groups[key]!.sorted() {
                if function.other != fallback {
                    entries.append(TableEntry(identity: id, proto: nil, decision: function.other))
                }
                for proto in function.segments.keys.sorted() {
                    for segment in function.segments[proto]! where segment.decision != function.other {
                        for (value, bits) in portPrefixes(segment.range) {
                            entries.append(TableEntry(identity: id, proto: proto, port: value, portBits: bits, decision: segment.decision))
                        }
                    }
                }
            }
        }
        return entries.sorted { ($0.identity ?? 0, $0.proto ?? 0, $0.port, $0.portBits) < ($1.identity ?? 0, $1.proto ?? 0, $1.port, $1.portBits) }
    }

    private func summarize(_ rule: Rule, direction: Policy.Direction) -> String {
        RuleSummary.describe(rule, direction: direction)
    }
}

extension Rule {
    /// Whether compiling it needs the local endpoint: a condition on the
    /// local side, or ingress named ports (resolved against the endpoint's
    /// own ports). Other rules compile the same for every endpoint.
    func dependsOnLocal(_ direction: Policy.Direction) -> Bool {
        let localSide = direction == .ingress ? destination : source
        if !localSide.peerPart.isEmpty { return true }
        guard direction == .ingress else { return false }
        return (destination.ports + destination.notPorts).contains { if case .named = $0 { return true } else { return false } }
    }
}
