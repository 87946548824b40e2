import Foundation
import ManxCommand
import ManxDatastore
import ManxDataplane
import ManxModel
import ManxNodeState
import ManxOptions

/// Runs conformance cases against a real node: pods in network namespaces,
/// real servers on ports 80 and 81, `manxd` enforcing each case's policy,
/// and a real connection (or SCTP INIT) for every pair of pods.
public final class ConformanceRunner {
    public struct Options: Sendable {
        /// Dataplanes to run every case against, one after another.
        public var modes: [DataplaneChoice] = [.bpf]
        public var timeoutMs = 1000
        public var binDirectory: String
        public var verbose = false
        /// Spread the pods over this many nodes (a Cluster, pods created
        /// through manx-cni), nil: one node.
        public var nodes: Int?
        public var encapsulation: Encapsulation = .none
        /// etcd members as the cluster's datastore (with `nodes`); 0: a directory.
        public var etcdMembers = 0
        public init(binDirectory: String) { self.binDirectory = binDirectory }
    }

    public struct Totals: Sendable { public var passed = 0, failed = 0 }

    let options: Options
    private var totals = Totals()
    private var mode = DataplaneChoice.bpf

    public init(options: Options) { self.options = options }

    /// Runs every case under `dirs`; prints PASS/FAIL lines and the closing line.
    public func run(_ dirs: [String]) throws -> Totals {
        for mode in options.modes {
            self.mode = mode
            for dir in dirs {
                let model = try ConformanceModel.load(from: dir)
                let cases = try ConformanceCase.discover([dir])
                if cases.isEmpty { say("no cases in \(dir)"); continue }
                let setUp = options.nodes == nil ? withNode : withCluster
                try setUp(model) { node in
                    for c in cases { try runCase(c, node: node, model: model) }
                }
            }
        }
        say("\(totals.passed) passed, \(totals.failed) failed")
        return totals
    }

    // MARK: The simulated node

    struct Node {
        let lab: Lab
        let datastore: ClusterDatastore
        /// Every node's daemon state (one for a single node).
        let paths: [NodePaths]
        /// "ns/pod" -> pod network namespace.
        let podNetns: [String: String]
        /// "ns/pod" -> the network namespace of the node it runs on.
        let podNode: [String: String]
        /// Where the daemons' and servers' logs go.
        let logs: String
        /// The model as datastore resources, with a case's overrides.
        let renderModel: (Expectation.ModelOverrides?) -> String
    }

    /// The pods spread round robin over the nodes of a cluster (so every
    /// namespace has pods on several nodes), created through manx-cni with
    /// their model addresses.
    private func withCluster(_ model: ConformanceModel, _ body: (Node) throws -> Void) throws {
        let prefix = "mxk\(getpid() % 100_000)"
        var clusterOptions = Cluster.Options(binDirectory: options.binDirectory)
        clusterOptions.nodes = options.nodes ?? 1
        clusterOptions.encapsulation = options.encapsulation
        clusterOptions.etcdMembers = options.etcdMembers
        let cluster = Cluster(prefix: prefix, options: clusterOptions)
        SignalCleanup.install(cluster.teardown)
        defer { cluster.teardown(); SignalCleanup.clear() }
        try cluster.up()
        let render = { (o: Expectation.ModelOverrides?) in ModelYAML.render(model, interfaces: nil, overrides: o) }
        try cluster.datastore.write("model.yaml", render(nil))
        var podNetns: [String: String] = [:]
        var podNode: [String: String] = [:]
        for (i, key) in model.pods.keys.sorted().enumerated() {
            let pod = try cluster.addPod(key, node: cluster.nodeNames[i % clusterOptions.nodes])
            guard pod.ip == model.pods[key]!.ip else { throw RunnerError("\(key) got \(pod.ip), not its model address") }
            podNetns[key] = pod.netns
            podNode[key] = pod.node
        }
        try cluster.waitApplied()
        let node = Node(lab: cluster.lab, datastore: cluster.datastore, paths: cluster.nodeNames.map { NodePaths(node: $0) },
                        podNetns: podNetns, podNode: podNode, logs: cluster.logs, renderModel: render)
        try startServers(node, logs: node.logs)
        try body(node)
    }

    private func withNode(_ model: ConformanceModel, _ body: (Node) throws -> Void) throws {
        let prefix = "mxc\(getpid() % 100_000)"
        let lab = Lab(prefix: prefix)
        let scratch = try makeScratchDirectory(prefix)
        let dsDir = "\(scratch)/datastore", logs = "\(scratch)/logs"
        let paths = NodePaths(node: prefix)
        let cleanup = {
            lab.teardown()
            try? FileManager.default.removeItem(atPath: scratch)
            try? FileManager.default.removeItem(atPath: paths.pinRoot)
            try? FileManager.default.removeItem(atPath: paths.stateDirectory)
        }
        SignalCleanup.install(cleanup)
        defer { cleanup(); SignalCleanup.clear() }

        try FileManager.default.createDirectory(atPath: dsDir, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        try lab.createNode()
        var podNetns: [String: String] = [:]
        var interfaces: [String: String] = [:]
        for key in model.pods.keys.sorted() {
            let pod = model.pods[key]!
            let (netns, iface) = try lab.addPod("\(pod.namespace)\(pod.name)", ip: pod.ip)
            podNetns[key] = netns
            interfaces[key] = iface
        }
        let datastore = ClusterDatastore(directory: dsDir, binDirectory: options.binDirectory)
        let render = { (o: Expectation.ModelOverrides?) in ModelYAML.render(model, interfaces: interfaces, overrides: o) }
        try datastore.write("model.yaml", render(nil))
        _ = try lab.spawn(in: lab.node, [bin("manxd"), "--datastore", dsDir, "--node", prefix, "--log-level", "notice"] + dataplaneArguments,
                          log: "\(logs)/manxd.log", needsPins: true)
        let node = Node(lab: lab, datastore: datastore, paths: [paths], podNetns: podNetns,
                        podNode: podNetns.mapValues { _ in lab.node }, logs: logs, renderModel: render)
        if case .rejected(let error) = try waitApplied(node) { throw RunnerError("the model was rejected: \(error)") }
        try startServers(node, logs: logs)
        try body(node)
    }

    /// Real servers on ports 80 and 81 in every pod.
    private func startServers(_ node: Node, logs: String) throws {
        func ready(_ key: String) -> String { "\(logs)/\(key.replacingOccurrences(of: "/", with: "-")).ready" }
        for (key, netns) in node.podNetns {
            _ = try node.lab.spawn(in: netns, [bin("manx-probe"), "serve", "--ports", "80,81", "--ready-file", ready(key)],
                                   log: "\(logs)/serve-\(netns).log")
        }
        try waitFor("servers to listen") { node.podNetns.keys.allSatisfy { FileManager.default.fileExists(atPath: ready($0)) } }
    }

    private func bin(_ name: String) -> String { options.binDirectory + "/" + name }

    private var dataplaneArguments: [String] { mode.daemonArguments }

    enum ApplyOutcome { case applied, rejected(String) }

    /// Waits until the daemon has put the datastore's current content in
    /// force, or has rejected it.
    private func waitApplied(_ node: Node) throws -> ApplyOutcome {
        let target = try node.datastore.target()
        var outcome: ApplyOutcome?
        try waitFor("manxd to apply the datastore (logs: \(node.logs))") {
            var applied = 0
            for paths in node.paths {
                guard let meta = try? NodeMetadata.read(paths) else { return false }
                switch ClusterDatastore.outcome(meta, target) {
                case .rejected(let error)?: outcome = .rejected(error); return true
                case .applied?: applied += 1
                case nil: break
                }
            }
            if applied == node.paths.count { outcome = .applied }
            return outcome != nil
        }
        return outcome!
    }

    private func waitFor(_ what: String, timeout: Double = 30, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            if Date() > deadline { throw RunnerError("timed out waiting for \(what)") }
            usleep(20_000)
        }
    }

    // MARK: Cases

    private func runCase(_ c: ConformanceCase, node: Node, model: ConformanceModel) throws {
        let overrides = c.expectation.model_overrides
        if overrides != nil {
            try node.datastore.write("model.yaml", node.renderModel(overrides))
        }
        try node.datastore.write("policy.yaml", c.policyYAML)
        defer {
            try? node.datastore.remove("policy.yaml")
            if overrides != nil {
                try? node.datastore.write("model.yaml", node.renderModel(nil))
            }
            _ = try? waitApplied(node)
        }
        let outcome = try waitApplied(node)
        // A case judges new flows. The iptables dataplanes accept what the
        // kernel's conntrack already knows (RELATED,ESTABLISHED, as Calico's
        // iptables mode does, even across a policy change), so a UDP probe
        // whose ephemeral port repeats an allowed one of an earlier case
        // would pass as established: each case starts with an empty table.
        // (BPF revokes such flows itself, which other tests check.)
        if mode != .bpf {
            for netns in Set(node.podNode.values) { try Shell.run(["ip", "netns", "exec", netns, "conntrack", "-F"]) }
        }
        for table in c.expectation.tables {
            let label = (options.modes.count > 1 ? "[\(mode.rawValue)] " : "") + "\(c.name) \(table.port)/\(table.protocol)"
            if case .rejected(let error) = outcome {
                say("FAIL \(label)")
                say("  policy rejected: \(error.replacingOccurrences(of: "\n", with: "\n  "))")
                totals.failed += 1
                continue
            }
            let mismatches = try probe(table, node: node, model: model)
            if mismatches.isEmpty {
                say("PASS \(label)")
                totals.passed += 1
            } else {
                say("FAIL \(label)")
                for m in mismatches { say("  \(m)") }
                totals.failed += 1
            }
        }
    }

    /// The source of a table's `node` probes: each pod's own node.
    static let nodeSource = "node"

    /// Probes every pair concurrently (one prober process per source pod).
    /// A pair expected to be allowed that fails is probed once more, as the
    /// Kubernetes e2e suite does, to ride out a lost first packet.
    private func probe(_ table: Expectation.Table, node: Node, model: ConformanceModel) throws -> [String] {
        let proto = table.protocol.lowercased()
        var expected: [String: [String: Bool]] = [:]
        for from in model.pods.keys {
            for to in model.pods.keys where !(from == to && (table.ignore_loopback ?? false)) {
                expected[from, default: [:]][to] = table.default
            }
        }
        for e in table.exceptions { expected[e.from]?[e.to] = e.allowed }
        if let probes = table.node {
            for to in model.pods.keys { expected[Self.nodeSource, default: [:]][to] = probes.default }
            for e in probes.exceptions ?? [] { expected[Self.nodeSource]?[e.to] = e.allowed }
        }

        func run(_ pairs: [String: [String]]) throws -> [String: [String: Bool]] {
            // One prober per source: a pod, or a node for its own pods.
            var sources: [(from: String, netns: String, targets: [String])] = []
            for (from, targets) in pairs where !targets.isEmpty {
                if from == Self.nodeSource {
                    for (netns, group) in Dictionary(grouping: targets, by: { node.podNode[$0]! }) { sources.append((from, netns, group.sorted())) }
                } else {
                    sources.append((from, node.podNetns[from]!, targets))
                }
            }
            // Every prober at once: each waits out the timeouts of its denied targets.
            let outputs = try Command.runConcurrently(sources.map { _, netns, targets in
                ["ip", "netns", "exec", netns, bin("manx-probe"), "probe", "--timeout-ms", String(options.timeoutMs)]
                    + targets.map { "\(proto):\(model.pods[$0]!.ip):\(table.port)" }
            })
            var results: [String: [String: Bool]] = [:]
            for ((from, _, targets), output) in zip(sources, outputs) {
                let lines = output.stdout.split(separator: "\n")
                guard output.succeeded, lines.count == targets.count else {
                    throw RunnerError("prober in \(from) failed (status \(output.status)): \(output.message)")
                }
                for (to, line) in zip(targets, lines) { results[from, default: [:]][to] = line.hasSuffix(" ok") }
            }
            return results
        }

        var observed = try run(expected.mapValues { $0.keys.sorted() })
        var retry: [String: [String]] = [:]
        for (from, row) in expected { for (to, allowed) in row where allowed && observed[from]?[to] != true { retry[from, default: []].append(to) } }
        if !retry.isEmpty {
            for (from, row) in try run(retry) { for (to, ok) in row { observed[from]![to] = ok } }
        }
        var mismatches: [String] = []
        for from in expected.keys.sorted() {
            for to in expected[from]!.keys.sorted() where observed[from]?[to] != expected[from]![to] {
                mismatches.append("\(from) -> \(to): expected \(expected[from]![to]! ? "allowed" : "denied"), got \(observed[from]?[to] == true ? "allowed" : "denied")")
            }
        }
        return mismatches
    }
}

public struct RunnerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Tears the lab down on SIGINT/SIGTERM too, not only on normal exit.
enum SignalCleanup {
    nonisolated(unsafe) private static var action: (() -> Void)?

    static func install(_ cleanup: @escaping () -> Void) {
        action = cleanup
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig) { s in
                SignalCleanup.action?()
                signal(s, SIG_DFL)
                raise(s)
            }
        }
    }

    static func clear() { action = nil }
}

/// Unbuffered output, so progress shows up as it happens under CI.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
