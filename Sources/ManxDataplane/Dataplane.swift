import Glibc
import ManxBPF
import ManxBPFObjects
import ManxCompiler
import ManxMapLayout
import ManxModel
import ManxNodeState

/// The BPF dataplane of one node: the loaded workload programs, their
/// pinned maps, and what is programmed in them.
///
/// The ipcache and every endpoint's rule sets exist once per generation
/// (see manx_generation in maps.h). `apply` moves the kernel to a new
/// compiled state without a packet ever meeting half of it:
///  1. record the allocations the state uses (for a restarted compiler);
///  2. write the entries of new rule sets (new ids: nothing uses them yet);
///  3. write the idle generation: its ipcache and every endpoint's slot,
///     create and attach new endpoints (their slot in force denies);
///  4. flip the generation in force: one word, the commit point;
///  5. wait until no program still runs with the old generation;
///  6. only then delete what nothing refers to any more, and revoke the
///     conntrack approvals of peers whose identity changed.
/// A failure before 4 undoes what that apply wrote and leaves the previous
/// state in force.
public final class Dataplane {
    public let paths: NodePaths
    public let maps: KernelMaps
    public let fromWorkload: BPFProgram
    public let toWorkload: BPFProgram
    private let object: BPFObject

    /// What the kernel holds, as far as this dataplane knows.
    private(set) var endpoints: [Int32: (interface: String, value: manx_endpoint)] = [:]
    /// The workload each endpoint was programmed for (unknown for those a
    /// previous daemon left: their interface and address identify them).
    private var workloads: [Int32: String] = [:]
    /// The generation in force (0 or 1).
    public private(set) var generation: UInt32 = 0
    /// Each generation's ipcache.
    private(set) var ipcache: [[CIDR: manx_ipcache_value]] = [[:], [:]]
    /// The compiled entries each generation's ipcache was written from, if
    /// known: an apply with the same entries has nothing to write there.
    private var ipcacheSource: [[IPCacheEntry]?] = [nil, nil]
    /// Endpoint policy slots, by index (endpoint id * 2 + generation).
    private var slots: [UInt32: manx_ep_policy] = [:]
    private(set) var rulesets: [UInt32: [manx_policy_key]] = [:]
    /// The allocations the kernel holds: what a new compiler recovers.
    public internal(set) var allocations = Allocations()
    /// The compile whose allocations the kernel holds exactly (nil: not
    /// known, or ids written since that are not pruned yet: `unpruned`).
    var allocationsCompileID: UInt64?
    var unpruned: [Allocations.Key: UInt32] = [:]
    private var verifiedAttachments = Set<Int32>()
    /// manx_ct_peers_missed when this daemon last added every table's
    /// peers to manx_ct_peers itself (nil: not yet): while the count is
    /// unchanged, the map holds every peer of every table.
    var peerIndexBaseline: UInt64?
    /// Whether only this daemon's programs can be creating flows: every
    /// endpoint's attachment checked (a restarted daemon's predecessor may
    /// have left older programs, which do not note peers).
    var programsAreOurs: Bool { !interfaces.attach || endpoints.keys.allSatisfy(verifiedAttachments.contains) }
    /// A table that lives in manx_ct's unused slot 0, and in every slot
    /// whose endpoint is gone (which releases its table): setting slot 0
    /// again is how the daemon waits for running programs, since every
    /// update of a map of maps waits for an RCU grace period and tc
    /// programs run inside an RCU read-side section. No endpoint reads it.
    private let barrierTable: BPFMap

    /// Returns once no program runs that started before: an update of a
    /// map of maps waits for an RCU grace period (see `barrierTable`).
    func waitForRunningPrograms() throws(BPFError) {
        try maps.conntrack.setInners([(UInt32(0), barrierTable)])
    }

    /// How endpoint interfaces become ifindexes, and whether programs are
    /// attached to them. Tests that drive the programs with
    /// BPF_PROG_TEST_RUN map names to synthetic ifindexes and attach nothing.
    public struct Interfaces: Sendable {
        public var resolve: @Sendable (String) -> Int32?
        public var attach: Bool
        public init(resolve: @escaping @Sendable (String) -> Int32?, attach: Bool) {
            self.resolve = resolve
            self.attach = attach
        }
        public static let kernel = Interfaces(resolve: { try? NetworkInterface.index(named: $0) }, attach: true)
    }

    let interfaces: Interfaces
    /// Conntrack entries each endpoint may hold: the size of its table.
    public let conntrackBudget: Int
    /// Where the search for a free endpoint id starts: ids go round, so a
    /// freed one (and its table) is reused as late as possible.
    private var nextEndpointID: UInt32 = 1
    /// A conntrack table made ahead, after an apply that took one, and
    /// already in its slot of manx_ct (no endpoint refers to the slot): a
    /// new endpoint takes it without an update of manx_ct, each of which
    /// waits for an RCU grace period. Where one pod came, more follow.
    private var spare: (id: UInt32, table: BPFMap)?

    public static let defaultConntrackBudget = Int(MANX_CT_BUDGET_DEFAULT)

    /// Loads the programs and creates (or reuses) the pinned maps, then
    /// reads what a previous daemon left programmed.
    public init(paths: NodePaths, interfaces: Interfaces = .kernel, conntrackBudget: Int = defaultConntrackBudget) throws(BPFError) {
        self.paths = paths
        self.interfaces = interfaces
        self.conntrackBudget = conntrackBudget
        object = try BPFObject(elf: BPFObjects.elf(.workload), name: "manx_workload", pinRoot: paths.pinRoot)
        try object.load()
        maps = try KernelMaps.fromObject(object)
        fromWorkload = try object.program(named: "manx_from_workload")
        toWorkload = try object.program(named: "manx_to_workload")
        barrierTable = try Self.createConntrackTable(maxEntries: 1)
        try readProgrammed()
    }

    private func readProgrammed() throws(BPFError) {
        generation = (try maps.generation.lookup(UInt32(0), as: manx_generation.self)?.active ?? 0) & 1
        for (ifindex, value) in try maps.endpoints.entries(as: (UInt32, manx_endpoint).self) {
            let index = Int32(bitPattern: ifindex)
            endpoints[index] = (NetworkInterface.name(index: index) ?? "", value)
            for gen in 0..<UInt32(MANX_GENERATIONS) {
                let slot = Self.slot(value.id, gen)
                slots[slot] = try maps.endpointPolicy.lookup(slot, as: manx_ep_policy.self)
            }
        }
        // Tables no endpoint refers to (a spare, or a daemon stopped between
        // creating a table and writing its endpoint) are released, with the
        // barrier put in slot 0, in one update; ids continue after the
        // highest in use.
        let used = Set(endpoints.values.map(\.value.id))
        let unused = try maps.conntrack.entries(as: (UInt32, UInt32).self).map(\.0).filter { $0 != 0 && !used.contains($0) }
        try maps.conntrack.setInners([(UInt32(0), barrierTable)] + unused.map { ($0, barrierTable) })
        nextEndpointID = (used.max() ?? 0) % (UInt32(MANX_ENDPOINTS_MAX) - 1) + 1
        for (key, value) in try maps.ipcache.entries(as: (manx_ipcache_key, manx_ipcache_value).self) {
            ipcache[Int(key.generationIndex)][key.cidr] = value
        }
        for key in try maps.policy.keys(as: manx_policy_key.self) {
            rulesets[key.rulesetID, default: []].append(key)
        }
        allocations = try readAllocations()
    }

    static func slot(_ endpointID: UInt32, _ generation: UInt32) -> UInt32 { endpointID * UInt32(MANX_GENERATIONS) + generation }

    /// An endpoint's rule sets and identity in the generation in force.
    public func policy(of endpoint: manx_endpoint) -> manx_ep_policy? { slots[Self.slot(endpoint.id, generation)] }

    public struct ApplyReport: Sendable {
        public var rulesetsAdded = 0
        public var rulesetsRemoved = 0
        public var policyEntriesWritten = 0
        public var ipcacheChanges = 0
        public var endpointsChanged = 0
        public var endpointsRemoved = 0
        /// Conntrack entries whose approval was revoked: their peer's identity changed.
        public var conntrackRevoked = 0
        /// Conntrack tables read to find them (none when no table can hold
        /// a flow with a peer that changed: see `revokeChangedPeers`).
        public var conntrackTablesRead = 0
        /// Whether a new generation came into force.
        public var flipped = false
        /// From the start of the apply to its commit point: the new state
        /// judges every packet from then on.
        public var inForce: Duration = .zero
        /// Time spent waiting for programs still running with the old generation.
        public var waitedForPrograms: Duration = .zero
        /// Time spent finding and revoking approvals of peers that changed identity.
        public var revoking: Duration = .zero
        public var attached: [String] = []
        /// Time spent checking and attaching programs on interfaces.
        public var attaching: Duration = .zero
        /// Endpoints whose interface does not exist (yet): not programmed.
        public var missingInterfaces: [String] = []
    }

    /// `inForce` is called at the commit point with the endpoints now
    /// enforced (what the daemon publishes for the CNI plugin), before the
    /// wait for running programs and the cleanup.
    public func apply(_ state: CompiledState, inForce: ([EndpointStatus]) -> Void = { _ in }) throws(BPFError) -> ApplyReport {
        let started = ContinuousClock.now
        var report = ApplyReport()
        var undo = Undo()
        let active = generation, idle = 1 - generation
        let pending = manx_ep_policy(ingress_ruleset: MANX_RULESET_PENDING, egress_ruleset: MANX_RULESET_PENDING, identity: 0)
        var freedTables: [UInt32] = [] // conntrack of endpoints gone or replaced
        var kept: [manx_endpoint] = []  // endpoints that keep their table
        do throws(BPFError) {
            // 1. Allocations first: an id is recorded before anything uses it.
            let allocationsByChanges = try writeAllocations(state)
            // 2. New rule sets.
            for (id, entries) in state.rulesets.sorted(by: { $0.key < $1.key }) where rulesets[id] == nil {
                var keys: [manx_policy_key] = []
                keys.reserveCapacity(entries.count)
                for entry in entries {
                    let key = manx_policy_key(rulesetID: id, entry: entry)
                    try maps.policy.update(key, manx_policy_value(entry.decision))
                    undo.policyKeys.append(key)
                    keys.append(key)
                }
                rulesets[id] = keys
                undo.rulesets.append(id)
                report.rulesetsAdded += 1
                report.policyEntriesWritten += keys.count
            }
            // 3a. The idle generation's ipcache (nothing reads it).
            try writeIPCache(state.ipcache, generation: idle)
            if let a = ipcacheSource[0], let b = ipcacheSource[1] {
                let (removed, set) = Self.difference(a, b)
                report.ipcacheChanges = removed.count + set.count
            } else {
                report.ipcacheChanges = Set(ipcache[0].keys).union(ipcache[1].keys).filter { ipcache[0][$0] != ipcache[1][$0] }.count
            }
            var changed = report.ipcacheChanges > 0
            // 3b. Endpoints: their idle slots, new ones created and attached.
            var wantedEndpoints: [Int32: (interface: String, workload: String, ip: IPv4Address, value: manx_endpoint, policy: manx_ep_policy)] = [:]
            for ep in state.endpoints {
                guard let ifindex = interfaces.resolve(ep.interface) else {
                    report.missingInterfaces.append("\(ep.workload) (\(ep.interface))")
                    continue
                }
                var v = manx_endpoint()
                v.addr = ep.ip.networkOrder
                let policy = manx_ep_policy(ingress_ruleset: ep.ingressRuleset, egress_ruleset: ep.egressRuleset, identity: ep.identity)
                wantedEndpoints[ifindex] = (ep.interface, ep.workload, ep.ip, v, policy)
            }
            // The same workload on the same interface keeps its id and
            // conntrack table; anything else starts with an empty one, and
            // with a slot in force that denies until the flip.
            let ordered = wantedEndpoints.sorted(by: { $0.key < $1.key })
            let keeps = ordered.map { ifindex, wanted in
                endpoints[ifindex].map { current in
                    current.interface == wanted.interface && current.value.addr == wanted.value.addr
                        && workloads[ifindex, default: wanted.workload] == wanted.workload
                } ?? false
            }
            var newIDs = try newConntrackTables(keeps.count { !$0 }, undo: &undo)[...]
            for ((ifindex, (interface, workload, _, wanted, policy)), keep) in zip(ordered, keeps) {
                let current = endpoints[ifindex]
                var value = wanted
                if keep, let current {
                    value.id = current.value.id
                    kept.append(value)
                } else {
                    if let current { freedTables.append(current.value.id) }
                    value.id = newIDs.removeFirst()
                    try writeSlot(value.id, active, pending)
                }
                try writeSlot(value.id, idle, policy)
                if slots[Self.slot(value.id, active)] != policy { changed = true }
                if current?.value != value || current?.interface != interface {
                    if current == nil {
                        for direction in [MANX_DIR_INGRESS, MANX_DIR_EGRESS] {
                            let key = manx_counters_key(ifindex: UInt32(ifindex), direction: direction.rawValue)
                            try maps.counters.updatePerCPU(key, manx_counters())
                        }
                    }
                    try maps.endpoints.update(UInt32(ifindex), value)
                    undo.endpoints.append((ifindex, current))
                    endpoints[ifindex] = (interface, value)
                    report.endpointsChanged += 1
                    changed = true
                }
                undo.workloads.append((ifindex, workloads[ifindex]))
                workloads[ifindex] = workload
                // Attach after the endpoint entry exists: the programs fail
                // closed on unknown interfaces. Checked once per interface
                // per daemon, so a restarted daemon puts its programs in place.
                if !interfaces.attach || verifiedAttachments.contains(ifindex) { continue }
                let attachStart = ContinuousClock.now
                defer { report.attaching += ContinuousClock.now - attachStart }
                let ingressID = try TC.attachedProgramID(ifindex: ifindex, hook: .ingress)
                let egressID = try TC.attachedProgramID(ifindex: ifindex, hook: .egress)
                if ingressID != fromWorkload.id || egressID != toWorkload.id {
                    try TC.attach(fromWorkload, ifindex: ifindex, hook: .ingress)
                    try TC.attach(toWorkload, ifindex: ifindex, hook: .egress)
                    report.attached.append(interface)
                }
                verifiedAttachments.insert(ifindex)
            }
            // Endpoints that go deny from the flip on, until they are deleted.
            let removed = endpoints.filter { wantedEndpoints[$0.key] == nil }
            for (_, current) in removed {
                try writeSlot(current.value.id, idle, pending)
                changed = true
            }

            // 4. The commit point.
            if changed {
                try maps.generation.update(UInt32(0), manx_generation(active: idle))
                generation = idle
                report.flipped = true
            }
            report.inForce = ContinuousClock.now - started
            undo = Undo() // the new state is in force: nothing to roll back from here
            inForce(ordered.map { EndpointStatus(workload: $0.value.workload, interface: $0.value.interface, ifindex: $0.key, ip: $0.value.ip.description) })

            // 5. No program still runs with what is deleted below. The same
            // update of manx_ct releases the tables of endpoints gone or
            // replaced (they deny from the flip on) and puts in a new spare.
            if changed {
                let start = ContinuousClock.now
                freedTables += removed.map(\.value.value.id)
                var slotsToSet = [(UInt32(0), barrierTable)] + freedTables.map { ($0, barrierTable) }
                if spare == nil && report.endpointsChanged > 0,
                   let table = try? Self.createConntrackTable(maxEntries: conntrackBudget) { // best effort: made when needed otherwise
                    var taken = Set(endpoints.values.map(\.value.id)).union(freedTables)
                    if let id = try? freeEndpointID(taken: &taken) {
                        slotsToSet.append((id, table))
                        spare = (id, table)
                    }
                }
                do throws(BPFError) {
                    try maps.conntrack.setInners(slotsToSet)
                } catch {
                    spare = nil
                    throw error
                }
                for id in freedTables {
                    for gen in 0..<UInt32(MANX_GENERATIONS) { slots[Self.slot(id, gen)] = nil }
                }
                report.waitedForPrograms = ContinuousClock.now - start
            }

            // 6. Garbage, and approvals the new identities invalidate.
            for (ifindex, _) in removed {
                try maps.endpoints.delete(UInt32(ifindex))
                for direction in [MANX_DIR_INGRESS, MANX_DIR_EGRESS] {
                    try maps.counters.delete(manx_counters_key(ifindex: UInt32(ifindex), direction: direction.rawValue))
                }
                endpoints[ifindex] = nil
                workloads[ifindex] = nil
                verifiedAttachments.remove(ifindex)
                report.endpointsRemoved += 1
            }
            for (id, keys) in rulesets where state.rulesets[id] == nil {
                for key in keys { try maps.policy.delete(key) }
                rulesets[id] = nil
                report.rulesetsRemoved += 1
            }
            if report.flipped && report.ipcacheChanges > 0 {
                let start = ContinuousClock.now
                (report.conntrackRevoked, report.conntrackTablesRead) = try revokeChangedPeers(of: kept, before: ipcache[Int(active)],
                                                                                               after: ipcache[Int(idle)])
                report.revoking = ContinuousClock.now - start
            }
            try pruneAllocations(state, byChanges: allocationsByChanges)
            // An idle generation whose ipcache source is unknown (after the
            // first apply of a daemon) is written in full by the next apply,
            // before its flip; writing it now keeps that off its path.
            if report.flipped && ipcacheSource[Int(active)] == nil {
                try writeIPCache(state.ipcache, generation: active)
            }
        } catch {
            rollback(undo)
            throw error
        }
        return report
    }

    /// Brings one generation's ipcache to `entries`, writing only what
    /// differs: found from the entries it was written from, when known.
    private func writeIPCache(_ entries: [IPCacheEntry], generation gen: UInt32) throws(BPFError) {
        let g = Int(gen)
        let (removed, set): ([CIDR], [IPCacheEntry])
        if let source = ipcacheSource[g] {
            (removed, set) = Self.difference(source, entries)
        } else {
            let wanted = Set(entries.map(\.cidr))
            (removed, set) = (ipcache[g].keys.filter { !wanted.contains($0) }, entries)
        }
        ipcacheSource[g] = nil // unknown until every write below is done
        for e in set {
            var v = manx_ipcache_value()
            v.identity = e.identity
            v.flags = e.localWorkload ? UInt32(MANX_IPC_F_LOCAL_WORKLOAD) : 0
            guard ipcache[g][e.cidr] != v else { continue }
            try maps.ipcache.update(manx_ipcache_key(e.cidr, generation: gen), v)
            ipcache[g][e.cidr] = v
        }
        for cidr in removed {
            try maps.ipcache.delete(manx_ipcache_key(cidr, generation: gen))
            ipcache[g][cidr] = nil
        }
        ipcacheSource[g] = entries
    }

    /// What turns ipcache `old` into `new` (each holds a CIDR once): the
    /// CIDRs to remove and the entries to set. Both come in a stable order
    /// (see the compiler), so a change is a run in the middle: the common
    /// prefix and suffix are skipped without hashing.
    static func difference(_ old: [IPCacheEntry], _ new: [IPCacheEntry]) -> (removed: [CIDR], set: [IPCacheEntry]) {
        var prefix = 0
        while prefix < old.count, prefix < new.count, old[prefix] == new[prefix] { prefix += 1 }
        var suffix = 0
        while suffix < old.count - prefix, suffix < new.count - prefix, old[old.count - 1 - suffix] == new[new.count - 1 - suffix] { suffix += 1 }
        let oldMiddle = old[prefix..<(old.count - suffix)], newMiddle = new[prefix..<(new.count - suffix)]
        let before = Dictionary(oldMiddle.map { ($0.cidr, $0) }, uniquingKeysWith: { a, _ in a })
        let after = Set(newMiddle.map(\.cidr))
        return (oldMiddle.map(\.cidr).filter { !after.contains($0) }, newMiddle.filter { before[$0.cidr] != $0 })
    }

    private func writeSlot(_ id: UInt32, _ gen: UInt32, _ policy: manx_ep_policy) throws(BPFError) {
        let slot = Self.slot(id, gen)
        guard slots[slot] != policy else { return }
        try maps.endpointPolicy.update(slot, policy)
        slots[slot] = policy
    }

    private struct Undo {
        var policyKeys: [manx_policy_key] = []
        var rulesets: [UInt32] = []
        var endpoints: [(Int32, (interface: String, value: manx_endpoint)?)] = []
        var tables: [UInt32] = []
        var workloads: [(Int32, String?)] = []
    }

    static func createConntrackTable(maxEntries: Int) throws(BPFError) -> BPFMap {
        try BPFMap.createHash(name: "manx_ct_ep", keySize: MemoryLayout<manx_ct_key>.size,
                              valueSize: MemoryLayout<manx_ct_value>.size, maxEntries: maxEntries)
    }

    /// Conntrack tables for `count` new endpoints, in their slots of
    /// manx_ct; returns their ids (recorded in `undo`). The spare comes
    /// first; the rest are created and put in with one update, so the
    /// kernel waits for one RCU grace period however many there are
    /// (updating a map of maps waits for one: maybe_wait_bpf_programs).
    private func newConntrackTables(_ count: Int, undo: inout Undo) throws(BPFError) -> [UInt32] {
        var ids: [UInt32] = []
        if count > 0, let spare {
            ids.append(spare.id)
            undo.tables.append(spare.id)
            self.spare = nil
        }
        var taken = Set(endpoints.values.map(\.value.id)).union(ids)
        var created: [(UInt32, BPFMap)] = []
        while ids.count < count {
            let id = try freeEndpointID(taken: &taken)
            created.append((id, try Self.createConntrackTable(maxEntries: conntrackBudget)))
            ids.append(id)
        }
        try maps.conntrack.setInners(created)
        undo.tables += created.map(\.0)
        return ids
    }

    /// An endpoint id not in `taken` (the ids in use, which still hold their
    /// tables, and those this apply took), added to it. Ids go round from
    /// `nextEndpointID`, so a freed one is reused as late as possible.
    private func freeEndpointID(taken: inout Set<UInt32>) throws(BPFError) -> UInt32 {
        var id = nextEndpointID
        while taken.contains(id) {
            id = id % (UInt32(MANX_ENDPOINTS_MAX) - 1) + 1
            guard id != nextEndpointID else { throw BPFError("endpoint id", errno: ENOSPC, "every conntrack table slot is in use") }
        }
        taken.insert(id)
        nextEndpointID = id % (UInt32(MANX_ENDPOINTS_MAX) - 1) + 1
        return id
    }

    /// Best effort: puts back endpoints, then removes the tables and rule
    /// sets this apply added. What it wrote into the idle generation is
    /// never read, and is overwritten by the next apply.
    private func rollback(_ undo: Undo) {
        for (ifindex, previous) in undo.endpoints.reversed() {
            if let previous {
                _ = try? maps.endpoints.update(UInt32(ifindex), previous.value)
            } else {
                _ = try? maps.endpoints.delete(UInt32(ifindex)) // programs stay: the interface drops
            }
            endpoints[ifindex] = previous
        }
        for (ifindex, previous) in undo.workloads.reversed() { workloads[ifindex] = previous }
        _ = try? maps.conntrack.setInners(undo.tables.map { ($0, barrierTable) })
        for key in undo.policyKeys { _ = try? maps.policy.delete(key) }
        for id in undo.rulesets { rulesets[id] = nil }
    }

    /// The kernel keeps the first 15 characters of a program's name.
    static let workloadProgramNames = Set(["manx_from_workload", "manx_to_workload"].map { String($0.prefix(15)) })

    /// Detaches the workload programs from every interface of the node,
    /// including those of endpoints removed earlier, and removes the pins:
    /// enforcement stops. For tests and `manxd --uninstall`.
    public func uninstall() throws(BPFError) {
        if interfaces.attach {
            for (ifindex, _) in NetworkInterface.all() {
                let ids = [try TC.attachedProgramID(ifindex: ifindex, hook: .ingress), try TC.attachedProgramID(ifindex: ifindex, hook: .egress)]
                guard ids.contains(where: { id in id.flatMap(BPFProgram.kernelName).map(Self.workloadProgramNames.contains) ?? false }) else { continue }
                try TC.detach(ifindex: ifindex, hook: .ingress)
                try TC.detach(ifindex: ifindex, hook: .egress)
            }
        }
        endpoints = [:]
        try BPFFS.removeTree(paths.pinRoot)
    }
}
