import ManxModel
import ManxSelectors

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
    /// The compile in progress: what it uses, and what it hands out.
    private var live = Allocations()
    private var identityIDs: [IdentityKey: Allocated] = [:]
    private var ruleIDs: [RuleInfo: Allocated] = [:]
    private var liveRules: [RuleInfo: Allocated] = [:]
    private var rulesetIDs: [[TableEntry]: Allocated] = [:]

    struct Allocated {
        var id: UInt32
        var digest: Digest
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

    private func remember(_ a: Allocated, _ kind: Allocations.Kind) -> UInt32 {
        live.ids[Allocations.Key(kind, a.digest)] = a.id
        return a.id
    }

    public func compile(_ resources: ResourceSet, options: Options = Options()) -> CompiledState {
        let workloads = Workload.all(in: resources)
        let local = workloads.filter { w in
            w.pod.interface != nil && w.ip != nil && (options.nodeName == nil || w.pod.nodeName == nil || w.pod.nodeName == options.nodeName)
        }
        var state = CompiledState()
        live = Allocations(next: allocated.next)
        liveRules = [:]

        // 1. Rule programs per local endpoint and direction.
        var usedMatchers = Set<Int>()
        func matcher(_ e: EntityRule) -> Int? {
            let peer = e.peerPart
            if peer.isEmpty { return nil }
            let number: Int
            if let n = matcherNumbers[peer] {
                number = n
            } else {
                number = matcherList.count
                matcherNumbers[peer] = number
                matcherList.append(peer)
                matcherTexts.append(CanonicalText.matcher(peer))
            }
            usedMatchers.insert(number)
            return number
        }
        let networkSets = resources.networkSets.map {
            NetworkSetPeer(set: $0, namespaceLabels: $0.namespace.map { Workload.namespaceLabels($0, resources.namespaces[$0]) } ?? [:])
        }
        // Each tier's policies in evaluation order, per direction, sorted
        // once (not per endpoint), as indices into resources.policies.
        let policies = resources.policies
        var policiesByTier: [String: [Policy.Direction: [Int]]] = [:]
        let orderKeys = policies.map { ($0.order ?? .infinity, $0.qualifiedName) }
        for i in policies.indices.sorted(by: { orderKeys[$0] < orderKeys[$1] }) {
            for direction in Policy.Direction.allCases where policies[i].types.contains(direction) {
                policiesByTier[policies[i].tier, default: [:]][direction, default: []].append(i)
            }
        }
        func tierOrder(_ name: String) -> (Double, String) { (resources.tiers[name]?.order ?? .infinity, name) }
        let tierNames = policiesByTier.keys.sorted { tierOrder($0) < tierOrder($1) }
        var programs: [(Workload, RuleProgram?, RuleProgram?)] = []
        for w in local {
            var perDirection: [Policy.Direction: RuleProgram] = [:]
            for direction in Policy.Direction.allCases {
                var tiers: [TierProgram] = []
                for tierName in tierNames {
                    let applying = (policiesByTier[tierName]![direction] ?? []).filter { policies[$0].appliesTo.matches(w) }
                    if applying.isEmpty { continue }
                    var rules: [ProgramRule] = []
                    for i in applying {
                        let policy = policies[i]
                        for rule in policy.rules(direction) {
                            if let r = programRule(rule, owner: policy.qualifiedName, tier: policy.tier, direction: direction,
                                                   local: w, networkSets: networkSets, matcher: matcher) {
                                rules.append(r)
                            }
                        }
                    }
                    let defaultID = ruleID(RuleInfo(policy: "tier \(tierName)", tier: tierName, direction: direction.rawValue,
                                                    index: nil, action: resources.tiers[tierName]?.defaultPass == true ? "Pass" : "Deny",
                                                    summary: "end of tier: no rule matched"))
                    let defaultPass = resources.tiers[tierName]?.defaultPass ?? false
                    tiers.append(TierProgram(name: tierName, defaultPass: defaultPass, defaultRuleID: defaultID, rules: rules))
                }
                // Profiles decide what no tier did, as one last tier that denies
                // when none of their rules match.
                var profileRules: [ProgramRule] = []
                var builtInOnly = true
                for name in w.profileNames {
                    if let profile = resources.profiles[name] {
                        builtInOnly = false
                        for rule in profile.rules(direction) {
                            if let r = programRule(rule, owner: "profile \(name)", tier: "profiles", direction: direction,
                                                   local: w, networkSets: networkSets, matcher: matcher) {
                                profileRules.append(r)
                            }
                        }
                    } else if name.hasPrefix("kns.") {
                        let id = ruleID(RuleInfo(policy: "profile \(name)", tier: "profiles", direction: direction.rawValue,
                                                 index: nil, action: "Allow", summary: "namespace profile: allow"))
                        profileRules.append(ProgramRule(id: id, action: .allow))
                    }
                }
                // Nothing but the built-in allow: the endpoint is not isolated.
                if tiers.isEmpty && builtInOnly { continue }
                let profileDefault = ruleID(RuleInfo(policy: "profiles", tier: "profiles", direction: direction.rawValue, index: nil,
                                                     action: "Deny", summary: "no profile rule matched"))
                tiers.append(TierProgram(name: "profiles", defaultPass: false, defaultRuleID: profileDefault, rules: profileRules))
                perDirection[direction] = RuleProgram(tiers: tiers)
            }
            programs.append((w, perDirection[.ingress], perDirection[.egress]))
        }

        // 2. Regions of address space and their identities.
        let identities = assignIdentities(workloads: workloads, networkSets: networkSets,
                                          matchers: usedMatchers.sorted(), local: Set(local.map(\.pod.key)), state: &state)
        let identityOf = Dictionary(state.ipcache.map { ($0.cidr, $0.identity) }, uniquingKeysWith: { a, _ in a })

        // 3. Rule sets, shared by content.
        var tableOfProgram: [RuleProgram: [TableEntry]] = [:]
        var liveRulesets: [[TableEntry]: Allocated] = [:]
        func rulesetID(_ program: RuleProgram?) -> UInt32 {
            guard let program else { return ReservedRuleset.allowAll }
            let table = tableOfProgram[program] ?? table(for: program, identities: identities)
            tableOfProgram[program] = table
            if let known = liveRulesets[table] { return known.id }
            let a = rulesetIDs[table] ?? allocate(.ruleset, Digest.sha256(CanonicalText.ruleset(table)))
            state.rulesets[a.id] = table
            liveRulesets[table] = a
            return remember(a, .ruleset)
        }
        for (w, ingress, egress) in programs {
            state.endpoints.append(CompiledEndpoint(
                workload: w.pod.key, interface: w.pod.interface!, ip: w.ip!,
                identity: identityOf[CIDR(w.ip!, 32)]!,
                ingressRuleset: rulesetID(ingress), egressRuleset: rulesetID(egress)))
        }
        rulesetIDs = liveRulesets
        ruleIDs = liveRules
        state.rules = Dictionary(uniqueKeysWithValues: liveRules.map { ($0.value.id, $0.key) })
        allocated = live
        state.allocations = live
        return state
    }

    // MARK: Rules

    private func ruleID(_ info: RuleInfo) -> UInt32 {
        if let known = liveRules[info] { return known.id }
        let a = ruleIDs[info] ?? allocate(.rule, Digest.sha256(CanonicalText.rule(info)))
        liveRules[info] = a
        return remember(a, .rule)
    }

    private func programRule(_ rule: Rule, owner: String, tier: String, direction: Policy.Direction, local: Workload,
                             networkSets: [NetworkSetPeer], matcher: (EntityRule) -> Int?) -> ProgramRule? {
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
    /// key: the matchers it satisfies and its named ports.
    private func assignIdentities(workloads: [Workload], networkSets: [NetworkSetPeer], matchers: [Int],
                                  local: Set<String>, state: inout CompiledState) -> [UInt32: IdentityKey] {
        var regions: [Peer] = []
        var seen = Set<CIDR>()
        for w in workloads {
            guard let ip = w.ip else { continue }
            let cidr = CIDR(ip, 32)
            if seen.insert(cidr).inserted { regions.append(Peer(cidr: cidr, workload: w)) }
        }
        var setsByNet: [CIDR: [NetworkSetPeer]] = [:]
        for ns in networkSets {
            for net in ns.set.nets {
                setsByNet[net, default: []].append(ns)
                if seen.insert(net).inserted { regions.append(Peer(cidr: net, workload: nil)) }
            }
        }
        // Candidate matchers per region come from an index, so the work is
        // proportional to matches, not regions x matchers.
        var byNet: [CIDR: [Int]] = [:]
        var everywhere: [Int] = []    // no nets: may match any region
        var workloadOnly: [Int] = []  // no nets, need a workload
        for i in matchers {
            let m = matcherList[i]
            for net in m.nets { byNet[net, default: []].append(i) }
            for cidr in m.nets + m.notNets where seen.insert(cidr).inserted { regions.append(Peer(cidr: cidr, workload: nil)) }
            if m.nets.isEmpty {
                if m.endpoints != nil || !m.serviceAccountNames.isEmpty { workloadOnly.append(i) } else { everywhere.append(i) }
            }
        }
        if seen.insert(.any).inserted { regions.append(Peer(cidr: .any, workload: nil)) }
        // Each region lies in the network sets whose CIDRs contain it.
        if !setsByNet.isEmpty {
            for i in regions.indices {
                for len in stride(from: regions[i].cidr.prefixLength, through: 0, by: -1) {
                    regions[i].networkSets += setsByNet[CIDR(regions[i].cidr.address, len)] ?? []
                }
            }
        }

        var keys: [UInt32: IdentityKey] = [:]
        var liveIDs: [IdentityKey: Allocated] = [:]
        var members: [UInt32: [String]] = [:]
        for region in regions {
            var candidates = everywhere
            for len in stride(from: region.cidr.prefixLength, through: 0, by: -1) {
                if let list = byNet[CIDR(region.cidr.address, len)] { candidates += list }
            }
            if region.workload != nil || !region.networkSets.isEmpty { candidates += workloadOnly }
            let matched = Set(candidates).filter { matcherList[$0].matchesPeer(region) }
            let key = IdentityKey(matched: matched.map(Int32.init).sorted(), ports: region.workload?.pod.ports ?? [],
                                  workload: region.workload != nil)
            let id: UInt32
            if key.matched.isEmpty && !key.workload {
                id = ReservedIdentity.world
            } else if let known = liveIDs[key] {
                id = known.id
            } else {
                let a = identityIDs[key] ?? allocate(.identity, Digest.sha256(CanonicalText.identity(
                    matchers: key.matched.map { matcherTexts[Int($0)] }, ports: key.ports, workload: key.workload)))
                liveIDs[key] = a
                id = remember(a, .identity)
            }
            keys[id] = key
            members[id, default: []].append(region.workload?.pod.key ?? region.cidr.description)
            state.ipcache.append(IPCacheEntry(cidr: region.cidr, identity: id,
                                              localWorkload: region.workload.map { local.contains($0.pod.key) } ?? false))
        }
        identityIDs = liveIDs
        state.identities = members.mapValues { IdentityInfo(members: $0) }
        return keys
    }

    // MARK: Tables

    /// The LPM entries of one rule set. Identities are grouped by what this
    /// program can tell apart, each group is evaluated once, and identities
    /// whose verdicts all equal the rule set's default get no entry.
    private func table(for program: RuleProgram, identities: [UInt32: IdentityKey]) -> [TableEntry] {
        let relevant = program.matchers
        let usesNames = program.usesPeerPortNames
        var groups: [IdentityKey: [UInt32]] = [:]
        for (id, key) in identities {
            let projection = IdentityKey(matched: key.matched.filter { relevant.contains(Int($0)) },
                                         ports: usesNames ? key.ports : [], workload: false)
            groups[projection, default: []].append(id)
        }
        let index = ProgramIndex(program)
        let functions = groups.keys.map { key in
            (key, DecisionFunction.evaluate(index, matched: key.matched.map(Int.init), peerPorts: key.ports))
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
