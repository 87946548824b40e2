import Foundation
import Logging
import ManxCompiler
import ManxDatastore
import ManxDataplane
import ManxIptables
import ManxModel
import ManxRouting
import ServiceLifecycle

/// What the daemon programs: the BPF maps (default) or iptables+ipset.
public enum DataplaneKind: Sendable, Equatable {
    case bpf
    case iptables(IptablesDataplane.Backend)
}

/// The two dataplanes behind one face, for the daemon.
protocol DataplaneBackend: AnyObject {
    /// Programs the state; returns log fields and endpoints not yet enforceable.
    func program(_ state: CompiledState) throws -> (fields: Logger.Metadata, missing: [String])
    func remove() throws
    /// Deletes conntrack entries past their timeout; returns how many.
    func expireConntrack() throws -> Int
}

extension Dataplane: DataplaneBackend {
    func program(_ state: CompiledState) throws -> (fields: Logger.Metadata, missing: [String]) {
        let r = try apply(state)
        return (["rulesetsAdded": "\(r.rulesetsAdded)", "rulesetsRemoved": "\(r.rulesetsRemoved)",
                 "policyEntries": "\(r.policyEntriesWritten)", "ipcacheChanges": "\(r.ipcacheChanges)",
                 "generationFlipped": "\(r.flipped)", "waitedForPrograms": "\(r.waitedForPrograms)",
                 "conntrackRevoked": "\(r.conntrackRevoked)", "revoking": "\(r.revoking)", "attached": "\(r.attached.joined(separator: ","))"], r.missingInterfaces)
    }
    func remove() throws { try uninstall() }
    func expireConntrack() throws -> Int { try expireConntrack(now: monotonicNanoseconds()) }
}

extension IptablesDataplane: DataplaneBackend {
    func program(_ state: CompiledState) throws -> (fields: Logger.Metadata, missing: [String]) {
        let r = try apply(state)
        return (["iptablesRules": "\(r.rules)", "setsWritten": "\(r.setsWritten)", "chainsRemoved": "\(r.chainsRemoved)"], [])
    }
    func remove() throws { try uninstall() }
    func expireConntrack() throws -> Int { 0 } // the kernel's conntrack expires its own entries
}

/// The node agent: keeps the kernel in sync with the datastore.
///
/// Each sync reads the whole directory, validates it as one batch, compiles
/// and applies the difference. A rejected batch changes nothing: the last
/// good state stays in force and the error is logged and published in the
/// node metadata. Programs are loaded once; later changes are map updates.
public actor NodeDaemon: Service {
    public struct Configuration: Sendable {
        public var datastore: String
        public var paths: NodePaths
        public var nodeName: String?
        public var dataplane: DataplaneKind
        /// VXLAN through this collect_md device (created if missing)
        /// instead of headers built in BPF; for measurement.
        public var vxlanDevice: String?
        /// Conntrack entries each endpoint may hold (BPF dataplane).
        public var conntrackBudget: Int
        public init(datastore: String, paths: NodePaths, nodeName: String? = nil, dataplane: DataplaneKind = .bpf,
                    vxlanDevice: String? = nil, conntrackBudget: Int = Dataplane.defaultConntrackBudget) {
            self.datastore = datastore
            self.paths = paths
            self.nodeName = nodeName
            self.dataplane = dataplane
            self.vxlanDevice = vxlanDevice
            self.conntrackBudget = conntrackBudget
        }
    }

    let config: Configuration
    let logger: Logger
    private let dataplane: any DataplaneBackend
    /// Routing between nodes (BPF dataplane with a node name only).
    private let routing: NodeRouting?
    /// The natOutgoing rules in force; nil: none installed by this process.
    private var natRules: [String]?
    private let compiler: PolicyCompiler
    private var metadata = NodeMetadata()
    private var lastDigest: String?
    /// Decodes only the files that changed since the last pass.
    private let reader: DirectoryReader

    public init(_ config: Configuration, logger: Logger) throws {
        self.config = config
        self.logger = logger
        reader = DirectoryReader(DirectoryDatastore(directory: config.datastore))
        switch config.dataplane {
        case .bpf:
            let bpf = try Dataplane(paths: config.paths, conntrackBudget: config.conntrackBudget)
            compiler = PolicyCompiler(recovering: bpf.allocations)
            dataplane = bpf
            routing = config.nodeName == nil ? nil : try NodeRouting(paths: config.paths)
        case .iptables(let backend):
            let iptables = try IptablesDataplane(backend: backend)
            compiler = PolicyCompiler(recovering: iptables.allocations)
            dataplane = iptables
            routing = nil
        }
        if let previous = try? NodeMetadata.read(config.paths) { metadata.generation = previous.generation }
        logger.info("dataplane loaded", metadata: ["pinRoot": "\(config.paths.pinRoot)", "datastore": "\(config.datastore)"])
    }

    /// One pass: returns whether the datastore content is now in force.
    @discardableResult
    public func sync() -> Bool {
        let started = ContinuousClock.now
        let snapshot: DirectoryReader.Read
        do {
            snapshot = try reader.read()
        } catch {
            logger.error("cannot read datastore", metadata: ["error": "\(error)"])
            return false
        }
        if snapshot.digest == lastDigest { return true }
        do {
            let resources = try ResourceSet.assemble(snapshot.files)
            let state = compiler.compile(resources, options: .init(nodeName: config.nodeName))
            // Routing is resolved before anything changes, so a batch that
            // cannot be routed here is rejected whole.
            let routing = try prepareRouting(resources)
            if let underlay = routing?.prepared.underlay?.name { try Self.checkNotUnderlay(state, resources, underlay: underlay) }
            var (fields, missing) = try dataplane.program(state)
            let routed = try applyRouting(routing)
            fields.merge(routed) { a, _ in a }
            let generation = metadata.generation + 1
            metadata = NodeMetadata(state: state)
            metadata.podMTU = routing?.prepared.podMTU
            metadata.underlay = routing?.prepared.underlay?.name
            metadata.generation = generation
            metadata.appliedDigest = snapshot.digest
            metadata.appliedAt = Date()
            metadata.missingInterfaces = missing
            metadata.resolveInterfaces()
            // Endpoints still waiting for their interface make the next
            // pass apply again even though the datastore did not change.
            lastDigest = missing.isEmpty ? snapshot.digest : nil
            try? metadata.write(config.paths)
            logger.info("applied", metadata: fields.merging([
                "generation": "\(generation)", "endpoints": "\(state.endpoints.count)",
                "rulesets": "\(state.rulesets.count)", "filesDecoded": "\(snapshot.decodedFiles)",
                "duration": "\(ContinuousClock.now - started)",
            ]) { a, _ in a })
            if !missing.isEmpty {
                logger.warning("endpoints without interface, not enforced yet",
                               metadata: ["endpoints": "\(missing.joined(separator: ", "))"])
            }
            return missing.isEmpty
        } catch {
            // Nothing was applied (or it was rolled back): publish why.
            let repeated = metadata.error == "\(error)" && metadata.rejectedDigest == snapshot.digest
            metadata.error = "\(error)"
            metadata.rejectedDigest = snapshot.digest
            // Invalid resources stay invalid until the datastore changes;
            // anything else (an interface missing, a kernel error) is
            // retried on the next pass.
            lastDigest = error is ValidationErrors ? snapshot.digest : nil
            try? metadata.write(config.paths)
            // A retry that fails the same way is not logged again.
            if !repeated { logger.error("batch rejected, previous state stays in force", metadata: ["error": "\(error)"]) }
            return false
        }
    }

    /// The workload programs drop whatever is not the endpoint's: on the
    /// underlay they would cut the node off.
    static func checkNotUnderlay(_ state: CompiledState, _ resources: ResourceSet, underlay: String) throws(ValidationErrors) {
        guard let ep = state.endpoints.first(where: { $0.interface == underlay }) else { return }
        let wep = resources.workloadEndpoints.values.first { $0.podKey == ep.workload }
        let ref = wep?.ref ?? resources.pods[ep.workload]?.ref
        throw ValidationErrors([ValidationError(
            file: ref?.file ?? "", resource: ref?.description ?? ep.workload,
            field: wep == nil ? "metadata.annotations.\(Pod.interfaceAnnotation)" : "spec.interfaceName",
            reason: "\(underlay) is this node's underlay interface, not a workload's")])
    }

    /// Routes, encapsulation and natOutgoing from the pools, nodes and IPAM
    /// blocks, resolved against this node's interfaces (BPF dataplane with
    /// a node name only).
    private func prepareRouting(_ resources: ResourceSet) throws -> (prepared: NodeRouting.Prepared, plan: RoutingPlan)? {
        guard let routing, let nodeName = config.nodeName else { return nil }
        let plan = RoutingPlan(nodeName: nodeName, pools: Array(resources.ipPools.values), nodes: Array(resources.nodes.values),
                               blocks: Array(resources.ipamBlocks.values), felix: Array(resources.felixConfigurations.values))
        return (try routing.prepare(plan, vxlanDevice: config.vxlanDevice), plan)
    }

    private func applyRouting(_ r: (prepared: NodeRouting.Prepared, plan: RoutingPlan)?) throws -> Logger.Metadata {
        guard let routing, let r else { return [:] }
        let report = try routing.apply(r.prepared)
        // The NAT chain changes only when the pools do (each change is two
        // iptables runs); without a Node resource there is none.
        let nat = r.plan.node == nil ? nil : NATOutgoing.rules(pools: r.plan.pools, natPools: r.plan.natOutgoingPools)
        if nat != natRules {
            if nat != nil { try NATOutgoing.apply(pools: r.plan.pools, natPools: r.plan.natOutgoingPools) } else { NATOutgoing.remove() }
            natRules = nat
        }
        return ["routesChanged": "\(report.routesChanged)", "routesRemoved": "\(report.routesRemoved)",
                "underlay": "\(r.prepared.underlay?.name ?? "-")"]
    }

    /// Runs until shutdown: sync on every directory change, and every few
    /// seconds anyway (interfaces that appear later, a missed event).
    public func run() async throws {
        let watcher = try DirectoryWatcher(directory: config.datastore)
        var complete = sync()
        var lastExpiry = ContinuousClock.now
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let changed = await Self.waitForChange(watcher, timeoutMs: complete ? 2000 : 250)
            if changed || !complete { complete = sync() }
            if ContinuousClock.now - lastExpiry >= Self.conntrackExpiryInterval {
                expireConntrack()
                lastExpiry = ContinuousClock.now
            }
        }
        logger.info("stopping; programs and maps stay pinned and enforcing")
    }

    /// How often idle conntrack entries are deleted: a small fraction of
    /// the shortest timeout (10 s for closed TCP flows).
    static let conntrackExpiryInterval = Duration.seconds(2)

    private func expireConntrack() {
        do {
            let removed = try dataplane.expireConntrack()
            if removed > 0 { logger.debug("conntrack entries expired", metadata: ["removed": "\(removed)"]) }
        } catch {
            logger.error("conntrack expiry failed", metadata: ["error": "\(error)"])
        }
    }

    /// The inotify wait blocks, so it runs off the cooperative pool.
    private static func waitForChange(_ watcher: DirectoryWatcher, timeoutMs: Int32) async -> Bool {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: watcher.wait(timeoutMs: timeoutMs)) }
        }
    }

    public func uninstall() throws {
        routing?.detach()
        NATOutgoing.remove()
        try dataplane.remove()
        try? FileManager.default.removeItem(atPath: config.paths.stateDirectory)
    }
}
