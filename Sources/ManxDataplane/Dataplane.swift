import Glibc
import ManxBPF
import ManxBPFObjects
import ManxCompiler
import ManxMapLayout
import ManxModel

/// The BPF dataplane of one node: the loaded workload programs, their
/// pinned maps, and what is programmed in them.
///
/// `apply` moves the kernel from what is programmed to a new compiled
/// state without a moment of half-applied policy:
///  1. write the entries of new rule sets (new ids: nothing uses them yet);
///  2. update the ipcache;
///  3. switch each endpoint to its rule sets with one map update each, and
///     attach programs to new interfaces;
///  4. only then delete what nothing refers to any more.
/// A failure in 1-3 undoes what that apply wrote and leaves the previous
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
    private(set) var ipcache: [CIDR: manx_ipcache_value] = [:]
    private(set) var rulesets: [UInt32: [manx_policy_key]] = [:]
    private var verifiedAttachments = Set<Int32>()

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
        try readProgrammed()
    }

    private func readProgrammed() throws(BPFError) {
        for (ifindex, value) in try maps.endpoints.entries(as: (UInt32, manx_endpoint).self) {
            let index = Int32(bitPattern: ifindex)
            endpoints[index] = (NetworkInterface.name(index: index) ?? "", value)
        }
        // Tables no endpoint refers to (a daemon stopped between creating a
        // table and writing its endpoint) are freed; ids continue after the
        // highest in use.
        let used = Set(endpoints.values.map(\.value.id))
        for id in 1..<UInt32(MANX_ENDPOINTS_MAX) where !used.contains(id) {
            if try maps.conntrack.lookup(id, as: UInt32.self) != nil { try maps.conntrack.delete(id) }
        }
        nextEndpointID = (used.max() ?? 0) % (UInt32(MANX_ENDPOINTS_MAX) - 1) + 1
        for (key, value) in try maps.ipcache.entries(as: (manx_ipcache_key, manx_ipcache_value).self) {
            ipcache[key.cidr] = value
        }
        for key in try maps.policy.keys(as: manx_policy_key.self) {
            rulesets[key.rulesetID, default: []].append(key)
        }
    }

    /// The first rule set id a compiler may use: above all programmed ones.
    public var nextFreeRuleset: UInt32 { (rulesets.keys.max() ?? 0) + 1 }

    public struct ApplyReport: Sendable {
        public var rulesetsAdded = 0
        public var rulesetsRemoved = 0
        public var policyEntriesWritten = 0
        public var ipcacheChanges = 0
        public var endpointsChanged = 0
        public var endpointsRemoved = 0
        public var attached: [String] = []
        /// Endpoints whose interface does not exist (yet): not programmed.
        public var missingInterfaces: [String] = []
    }

    public func apply(_ state: CompiledState) throws(BPFError) -> ApplyReport {
        var report = ApplyReport()
        var undo = Undo()
        do throws(BPFError) {
            // 1. New rule sets.
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
            // 2. IP cache additions and changes.
            var wantedIPCache: [CIDR: manx_ipcache_value] = [:]
            for e in state.ipcache {
                var v = manx_ipcache_value()
                v.identity = e.identity
                v.flags = e.localWorkload ? UInt32(MANX_IPC_F_LOCAL_WORKLOAD) : 0
                wantedIPCache[e.cidr] = v
            }
            for (cidr, value) in wantedIPCache where ipcache[cidr] != value {
                try maps.ipcache.update(manx_ipcache_key(cidr), value)
                undo.ipcache.append((cidr, ipcache[cidr]))
                ipcache[cidr] = value
                report.ipcacheChanges += 1
            }
            // 3. Endpoints: switch rule sets, attach new interfaces.
            var wantedEndpoints: [Int32: (interface: String, workload: String, value: manx_endpoint)] = [:]
            for ep in state.endpoints {
                guard let ifindex = interfaces.resolve(ep.interface) else {
                    report.missingInterfaces.append("\(ep.workload) (\(ep.interface))")
                    continue
                }
                var v = manx_endpoint()
                v.ingress_ruleset = ep.ingressRuleset
                v.egress_ruleset = ep.egressRuleset
                v.identity = ep.identity
                v.addr = ep.ip.networkOrder
                wantedEndpoints[ifindex] = (ep.interface, ep.workload, v)
            }
            var freedTables: [UInt32] = [] // conntrack of endpoints gone or replaced
            var takenIDs = Set(endpoints.values.map(\.value.id))
            for (ifindex, (interface, workload, wanted)) in wantedEndpoints.sorted(by: { $0.key < $1.key }) {
                let current = endpoints[ifindex]
                var value = wanted
                // The same workload on the same interface keeps its id and
                // conntrack table; anything else starts with an empty one.
                if let current, current.interface == interface, current.value.addr == value.addr,
                   workloads[ifindex, default: workload] == workload {
                    value.id = current.value.id
                } else {
                    if let current { freedTables.append(current.value.id) }
                    value.id = try newConntrackTable(taken: &takenIDs)
                    undo.tables.append(value.id)
                }
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
                }
                undo.workloads.append((ifindex, workloads[ifindex]))
                workloads[ifindex] = workload
                // Attach after the endpoint entry exists: the programs fail
                // closed on unknown interfaces. Checked once per interface
                // per daemon, so a restarted daemon puts its programs in place.
                if !interfaces.attach || verifiedAttachments.contains(ifindex) { continue }
                let ingressID = try TC.attachedProgramID(ifindex: ifindex, hook: .ingress)
                let egressID = try TC.attachedProgramID(ifindex: ifindex, hook: .egress)
                if ingressID != fromWorkload.id || egressID != toWorkload.id {
                    try TC.attach(fromWorkload, ifindex: ifindex, hook: .ingress)
                    try TC.attach(toWorkload, ifindex: ifindex, hook: .egress)
                    report.attached.append(interface)
                }
                verifiedAttachments.insert(ifindex)
            }
            // 4. Garbage: endpoints, ipcache entries and rule sets no longer
            // wanted. A removed endpoint's programs stay attached until its
            // interface is gone: with no endpoint entry they drop everything.
            for (ifindex, current) in endpoints where wantedEndpoints[ifindex] == nil {
                try maps.endpoints.delete(UInt32(ifindex))
                for direction in [MANX_DIR_INGRESS, MANX_DIR_EGRESS] {
                    try maps.counters.delete(manx_counters_key(ifindex: UInt32(ifindex), direction: direction.rawValue))
                }
                endpoints[ifindex] = nil
                workloads[ifindex] = nil
                freedTables.append(current.value.id)
                verifiedAttachments.remove(ifindex)
                report.endpointsRemoved += 1
            }
            undo = Undo() // the new state is in force: nothing to roll back from here
            for id in freedTables { try maps.conntrack.delete(id) }
            for (cidr, _) in ipcache where wantedIPCache[cidr] == nil {
                try maps.ipcache.delete(manx_ipcache_key(cidr))
                ipcache[cidr] = nil
                report.ipcacheChanges += 1
            }
            for (id, keys) in rulesets where state.rulesets[id] == nil {
                for key in keys { try maps.policy.delete(key) }
                rulesets[id] = nil
                report.rulesetsRemoved += 1
            }
        } catch {
            rollback(undo)
            throw error
        }
        return report
    }

    private struct Undo {
        var policyKeys: [manx_policy_key] = []
        var rulesets: [UInt32] = []
        var ipcache: [(CIDR, manx_ipcache_value?)] = []
        var endpoints: [(Int32, (interface: String, value: manx_endpoint)?)] = []
        var tables: [UInt32] = []
        var workloads: [(Int32, String?)] = []
    }

    /// Creates an endpoint's conntrack table under an id not in `taken`
    /// (the ids in use when the apply began, which still hold their tables,
    /// and those this apply created), and adds the id to it.
    private func newConntrackTable(taken: inout Set<UInt32>) throws(BPFError) -> UInt32 {
        var id = nextEndpointID
        while taken.contains(id) {
            id = id % (UInt32(MANX_ENDPOINTS_MAX) - 1) + 1
            guard id != nextEndpointID else { throw BPFError("endpoint id", errno: ENOSPC, "every conntrack table slot is in use") }
        }
        let table = try BPFMap.createHash(name: "manx_ct_ep", keySize: MemoryLayout<manx_ct_key>.size,
                                          valueSize: MemoryLayout<manx_ct_value>.size, maxEntries: conntrackBudget)
        try maps.conntrack.setInner(at: id, table)
        taken.insert(id)
        nextEndpointID = id % (UInt32(MANX_ENDPOINTS_MAX) - 1) + 1
        return id
    }

    /// Best effort: puts back endpoints and ipcache entries, then removes the
    /// rule sets this apply added.
    private func rollback(_ undo: Undo) {
        for (ifindex, previous) in undo.endpoints.reversed() {
            if let previous {
                _ = try? maps.endpoints.update(UInt32(ifindex), previous.value)
            } else {
                _ = try? maps.endpoints.delete(UInt32(ifindex)) // programs stay: the interface drops
            }
            endpoints[ifindex] = previous
        }
        for (cidr, previous) in undo.ipcache.reversed() {
            if let previous { _ = try? maps.ipcache.update(manx_ipcache_key(cidr), previous) } else { _ = try? maps.ipcache.delete(manx_ipcache_key(cidr)) }
            ipcache[cidr] = previous
        }
        for (ifindex, previous) in undo.workloads.reversed() { workloads[ifindex] = previous }
        for id in undo.tables { _ = try? maps.conntrack.delete(id) }
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
