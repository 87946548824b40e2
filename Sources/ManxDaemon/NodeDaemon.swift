import Foundation
import Logging
import ManxBPF
import ManxCompiler
import ManxDatastore
import ManxDataplane
import ManxIptables
import ManxModel
import ManxNodeState
import ManxRouting
import ServiceLifecycle

/// What the daemon programs: the BPF maps (default) or iptables+ipset.
public enum DataplaneKind: Sendable, Equatable {
    case bpf
    case iptables(IptablesDataplane.Backend)
}

/// The two dataplanes behind one face, for the daemon.
protocol DataplaneBackend: AnyObject {
    /// Programs the state; returns log fields and endpoints not yet
    /// enforceable. `inForce` gets the endpoints enforced, as soon as they are.
    func program(_ state: CompiledState, inForce: ([EndpointStatus]) -> Void) throws -> (fields: Logger.Metadata, missing: [String])
    func remove() throws
    /// Deletes conntrack entries past their timeout; returns how many.
    func expireConntrack() throws -> Int
}

extension Dataplane: DataplaneBackend {
    func program(_ state: CompiledState, inForce: ([EndpointStatus]) -> Void) throws -> (fields: Logger.Metadata, missing: [String]) {
        let r = try apply(state, inForce: inForce)
        return (["rulesetsAdded": "\(r.rulesetsAdded)", "rulesetsRemoved": "\(r.rulesetsRemoved)",
                 "policyEntries": "\(r.policyEntriesWritten)", "ipcacheChanges": "\(r.ipcacheChanges)",
                 "generationFlipped": "\(r.flipped)", "waitedForPrograms": "\(r.waitedForPrograms)",
                 "conntrackRevoked": "\(r.conntrackRevoked)", "conntrackTablesRead": "\(r.conntrackTablesRead)", "revoking": "\(r.revoking)", "attaching": "\(r.attaching)", "applying": "\(r.inForce)", "attached": "\(r.attached.joined(separator: ","))"], r.missingInterfaces)
    }
    func remove() throws { try uninstall() }
    func expireConntrack() throws -> Int { try expireConntrack(now: monotonicNanoseconds()) }
}

extension IptablesDataplane: DataplaneBackend {
    func program(_ state: CompiledState, inForce: ([EndpointStatus]) -> Void) throws -> (fields: Logger.Metadata, missing: [String]) {
        let r = try apply(state)
        // Rules match interfaces by name: the index is what the name is now.
        inForce(state.endpoints.compactMap { ep in
            (try? NetworkInterface.index(named: ep.interface)).map {
                EndpointStatus(workload: ep.workload, interface: ep.interface, ifindex: $0, ip: ep.ip.description)
            }
        })
        return (["iptablesRules": "\(r.rules)", "setsWritten": "\(r.setsWritten)", "chainsRemoved": "\(r.chainsRemoved)"], [])
    }
    func remove() throws { try uninstall() }
    func expireConntrack() throws -> Int { 0 } // the kernel's conntrack expires its own entries
}

/// The node agent: keeps the kernel in sync with the datastore.
///
/// It follows the datastore (a directory or etcd) through a cache of its
/// decoded content; after each change it validates everything as one
/// batch, compiles and applies the difference. A rejected batch changes
/// nothing: the last good state stays in force and the error is logged and
/// published in the node metadata. Programs are loaded once; later changes are map updates.
public actor NodeDaemon: Service {
    public struct Configuration: Sendable {
        public var datastore: any Datastore
        public var paths: NodePaths
        public var nodeName: String?
        public var dataplane: DataplaneKind
        /// VXLAN through this collect_md device (created if missing)
        /// instead of headers built in BPF; for measurement.
        public var vxlanDevice: String?
        /// Conntrack entries each endpoint may hold (BPF dataplane).
        public var conntrackBudget: Int
        public init(datastore: any Datastore, paths: NodePaths, nodeName: String? = nil, dataplane: DataplaneKind = .bpf,
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
    private let metadataWriter: MetadataWriter
    private let endpointStatus: EndpointStatusPublisher
    private var lastDigest: String?
    /// The datastore's content, decoded; only changed keys are decoded again.
    private let cache: ResourceCache
    /// Keys decoded since the last pass (for the log).
    private var decodedSinceSync = 0
    /// When the oldest update not yet synced was received (for the log:
    /// how long it waited for the pass, and when it was in force).
    private var pendingSince: ContinuousClock.Instant?
    /// Whether the cache holds a snapshot: before one, nothing is applied
    /// (an empty cache is not an empty datastore).
    private var listed = false
    /// Whether the last pass put everything in force.
    private var complete = false

    public init(_ config: Configuration, logger: Logger) throws {
        self.config = config
        self.logger = logger
        let datastore = config.datastore
        cache = ResourceCache { key, file in datastore.check(key: key, file) }
        metadataWriter = MetadataWriter(paths: config.paths)
        endpointStatus = EndpointStatusPublisher(paths: config.paths)
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

    /// Takes in one update from the datastore.
    func receive(_ update: DatastoreUpdate) {
        if case .unreachable(let reason) = update {
            if metadata.datastoreError == nil {
                logger.warning("datastore unreachable; the last state stays in force, retrying",
                               metadata: ["datastore": "\(config.datastore)", "error": "\(reason)"])
            }
            if metadata.datastoreError != reason {
                metadata.datastoreError = reason
                metadataWriter.submit(metadata)
            }
            return
        }
        if metadata.datastoreError != nil {
            logger.info("datastore reachable again", metadata: ["datastore": "\(config.datastore)"])
            metadata.datastoreError = nil
            metadataWriter.submit(metadata)
        }
        pendingSince = pendingSince ?? ContinuousClock.now
        let decoded = cache.apply(update)
        decodedSinceSync += decoded
        if case .snapshot(let all, let revision) = update {
            // A snapshot after the first: the changes in between were
            // compacted away. Only the keys that differ were decoded.
            if listed {
                logger.info("datastore listed again", metadata: ["revision": "\(revision)", "keys": "\(all.count)", "keysDecoded": "\(decoded)"])
            }
            listed = true
        }
    }

    /// One pass: returns whether the datastore content is now in force.
    @discardableResult
    public func sync() -> Bool {
        guard listed else { return false }
        let started = ContinuousClock.now
        let digest = cache.digest
        if digest == lastDigest {
            // Nothing to apply, but the datastore moved on: say this node
            // has seen that revision (its content still applied, or still
            // rejected).
            if metadata.rejectedDigest != nil, cache.revision > metadata.rejectedRevision ?? 0 {
                metadata.rejectedRevision = cache.revision
                metadataWriter.submit(metadata)
            } else if metadata.rejectedDigest == nil, let applied = metadata.appliedRevision, cache.revision > applied {
                metadata.appliedRevision = cache.revision
                metadataWriter.submit(metadata)
            }
            return true
        }
        let decoded = decodedSinceSync
        decodedSinceSync = 0
        let received = pendingSince ?? started
        pendingSince = nil
        var inForce: Duration?
        do {
            let resources = try cache.assemble()
            let assembled = ContinuousClock.now
            let state = compiler.compile(resources, options: .init(nodeName: config.nodeName))
            let compiled = ContinuousClock.now
            // Routing is resolved before anything changes, so a batch that
            // cannot be routed here is rejected whole.
            let routing = try prepareRouting(resources)
            if let underlay = routing?.prepared.underlay?.name { try Self.checkNotUnderlay(state, resources, underlay: underlay) }
            let stages: Logger.Metadata = ["assembling": "\(assembled - started)", "compiling": "\(compiled - assembled)",
                                           "preparingRoutes": "\(ContinuousClock.now - compiled)"]
            var programmed: [EndpointStatus] = []
            var (fields, missing) = try dataplane.program(state) { enforced in
                inForce = ContinuousClock.now - received
                programmed = enforced
                do {
                    try endpointStatus.publish(enforced)
                } catch {
                    logger.error("cannot publish endpoint status", metadata: ["error": "\(error)"])
                }
            }
            let routed = try applyRouting(routing)
            fields.merge(routed) { a, _ in a }
            fields.merge(stages) { a, _ in a }
            let generation = metadata.generation + 1
            metadata = NodeMetadata(state: state)
            metadata.podMTU = routing?.prepared.podMTU
            metadata.underlay = routing?.prepared.underlay?.name
            metadata.generation = generation
            metadata.appliedDigest = digest
            metadata.appliedRevision = cache.revision
            metadata.appliedAt = Date()
            metadata.missingInterfaces = missing
            metadata.record(programmed)
            // Endpoints still waiting for their interface make the next
            // pass apply again even though the datastore did not change.
            lastDigest = missing.isEmpty ? digest : nil
            metadataWriter.submit(metadata)
            logger.info("applied", metadata: fields.merging([
                "generation": "\(generation)", "endpoints": "\(state.endpoints.count)",
                "rulesets": "\(state.rulesets.count)", "keysDecoded": "\(decoded)", "revision": "\(cache.revision)",
                "duration": "\(ContinuousClock.now - started)", "queued": "\(started - received)",
                "inForceSinceReceived": "\(inForce.map { "\($0)" } ?? "-")",
            ]) { a, _ in a })
            if !missing.isEmpty {
                logger.warning("endpoints without interface, not enforced yet",
                               metadata: ["endpoints": "\(missing.joined(separator: ", "))"])
            }
            return missing.isEmpty
        } catch {
            // Nothing was applied (or it was rolled back): publish why.
            let repeated = metadata.error == "\(error)" && metadata.rejectedDigest == digest
            metadata.error = "\(error)"
            metadata.rejectedDigest = digest
            metadata.rejectedRevision = cache.revision
            // Invalid resources stay invalid until the datastore changes;
            // anything else (an interface missing, a kernel error) is
            // retried on the next pass.
            lastDigest = error is ValidationErrors ? digest : nil
            metadataWriter.submit(metadata)
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

    /// Runs until shutdown: takes in the datastore's updates and syncs after
    /// them, coalescing those that arrive during a pass; retries a pass that
    /// left something out every 250 ms; expires conntrack entries.
    public func run() async throws {
        let (kicks, kick) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let updates = config.datastore.updates()
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await update in updates {
                        await self.receive(update)
                        kick.yield()
                    }
                }
                group.addTask {
                    for await _ in kicks { await self.syncAndRecord() }
                }
                group.addTask {
                    var lastExpiry = ContinuousClock.now
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(250))
                        if await !self.complete { kick.yield() }
                        if ContinuousClock.now - lastExpiry >= Self.conntrackExpiryInterval {
                            await self.expireConntrack()
                            lastExpiry = ContinuousClock.now
                        }
                    }
                }
                await group.next()
                group.cancelAll()
            }
        }
        metadataWriter.flush()
        logger.info("stopping; programs and maps stay pinned and enforcing")
    }

    private func syncAndRecord() { complete = sync() }

    /// Applies the datastore's first snapshot once (`manxd --once`).
    public func syncOnce() async -> Bool {
        for await update in config.datastore.updates() {
            if case .unreachable(let reason) = update {
                logger.error("cannot read datastore", metadata: ["datastore": "\(config.datastore)", "error": "\(reason)"])
                return false
            }
            receive(update)
            defer { metadataWriter.flush() }
            return sync()
        }
        return false
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

    public func uninstall() throws {
        metadataWriter.flush()
        routing?.detach()
        NATOutgoing.remove()
        try dataplane.remove()
        try? FileManager.default.removeItem(atPath: config.paths.stateDirectory)
    }
}
