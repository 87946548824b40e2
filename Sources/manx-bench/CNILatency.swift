import ArgumentParser
import Foundation
import Glibc
import ManxBPF
import ManxCommand
import ManxConformance
import ManxMapLayout
import ManxNodeState

/// Time from the start of a CNI ADD to the pod's first policed packet, on a
/// one-node simulated cluster (manxd running, either datastore), broken
/// down by stage. The pod's resource is in the datastore beforehand, as a
/// Kubernetes pod is before its sandbox is made, and its server listens in
/// the new namespace before the ADD starts. Its policy admits the client
/// on port 80 only: the first packet judged by it is the first connection
/// to port 80 that succeeds while port 81 does not. The plugin reports when
/// each of its stages ended (MANX_CNI_TIMINGS, on CLOCK_MONOTONIC, the
/// bench's clock too).
struct CNILatency: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cni-latency",
                                                    abstract: "CNI ADD start to first policed packet, by stage, p50/p99.")

    @Option(help: "Pods to create.")
    var count: Int = 30

    @Option(help: "Datastore: directory or etcd (one member).")
    var datastore: String = "directory"

    @Option(help: "Policies loaded beforehand (over 100 pods that are peers elsewhere, as control-plane's).")
    var backgroundPolicies: Int = 0

    @Option(help: "Add this run's stage percentiles to the JSON array in this file (created if missing).")
    var json: String?

    struct Run: Codable {
        var datastore: String
        var policies: Int
        var pods: Int
        var stages: [Stage]
    }

    struct Stage: Codable {
        var stage: String
        var p50: Double
        var p99: Double
    }

    /// The plugin's marks, in order, and the stage each one ends.
    static let stages: [(mark: String, stage: String)] = [
        ("started", "exec"), ("parsed", "config"), ("checked", "datastore check"), ("pod read", "pod read"),
        ("address assigned", "IPAM"), ("interfaces made", "veth"), ("endpoint written", "endpoint write"),
        ("policy programmed", "manxd programs"), ("activated", "link up, route"), ("done", "exit"),
    ]

    func run() throws {
        guard ["directory", "etcd"].contains(datastore) else { throw ValidationError("--datastore must be directory or etcd") }
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let prefix = "mxcl\(getpid() % 1000)"
        var options = Cluster.Options(binDirectory: bin)
        options.nodes = 1
        options.etcdMembers = datastore == "etcd" ? 1 : 0
        let cluster = Cluster(prefix: prefix, options: options)
        let scratch = try makeScratchDirectory(prefix)
        defer {
            cluster.teardown()
            try? FileManager.default.removeItem(atPath: scratch)
        }
        try cluster.up()
        let node = cluster.nodeNames[0]

        var base = """
        apiVersion: v1
        kind: Namespace
        metadata: {name: lat}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: client, namespace: lat, labels: {app: client}}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web, namespace: lat}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
        """
        if backgroundPolicies > 0 {
            base += "\n---\n" + ControlPlane.resources(policies: backgroundPolicies, endpoints: 100)
                .replacingOccurrences(of: ControlPlane.interfaceAnnotation, with: "", options: .regularExpression)
        }
        try cluster.datastore.write("base.yaml", base + "\n")
        try cluster.waitApplied(timeout: 300)
        let client = try cluster.addPod("lat/client", node: node)

        let events = try BPFRingBuffer(try BPFMap.openPinned("\(NodePaths(node: node).pinRoot)/\(MANX_MAP_EVENTS)"))
        var rows: [[Double]] = [] // per pod: the stages' times, the first packet after ADD returned, the total
        for k in 0..<count {
            let name = "web\(k)"
            try cluster.datastore.write("\(name).yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: \(name), namespace: lat, labels: {app: web}}\n")
            try cluster.waitApplied()
            let netns = "\(prefix)-lat-\(name)"
            try cluster.lab.createNamespace(netns)
            let ready = "\(scratch)/\(name).ready"
            _ = try cluster.lab.spawn(in: netns, [bin + "/manx-probe", "serve", "--ports", "80,81", "--ready-file", ready], log: "/dev/null")
            for _ in 0..<200 where !FileManager.default.fileExists(atPath: ready) { usleep(5_000) }
            try? FileManager.default.removeItem(atPath: ready)

            let env = [
                "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "\(prefix)-\(name)", "CNI_NETNS": "/run/netns/\(netns)",
                "CNI_IFNAME": "eth0", "CNI_PATH": bin, "CNI_ARGS": "K8S_POD_NAMESPACE=lat;K8S_POD_NAME=\(name)",
                "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin", "MANX_CNI_TIMINGS": "1",
            ]
            let t0 = EndpointLatency.now()
            let out = try Command.run(["nsenter", "--net=/run/netns/\(node)", bin + "/manx-cni"], input: cluster.networkConfig(node: node),
                                      environment: env)
            let returned = EndpointLatency.now()
            guard out.succeeded, let ip = Self.address(out.stdout) else {
                throw RunnerError("manx-cni ADD of lat/\(name) failed: \(out.stdout) \(out.stderr)")
            }
            let marks = try Self.marks(out.stderr)
            let judged = try t0 + EndpointLatency.firstJudged(from: client.netns, inet_addr(ip), allowed: 80, refused: 81, since: t0,
                                                                    events: events, interval: 20)
            var previous = t0, row: [Double] = []
            for (mark, _) in Self.stages {
                guard let t = marks[mark] else { throw RunnerError("manx-cni reported no '\(mark)' time: \(out.stderr)") }
                row.append((t - previous) * 1000)
                previous = t
            }
            row += [(returned - previous) * 1000, (judged - returned) * 1000, (judged - t0) * 1000]
            rows.append(row)
        }
        let names = Self.stages.map(\.stage) + ["ADD returned", "first policed packet", "total"]
        print("datastore \(datastore), \(backgroundPolicies) policies loaded, \(count) pods; ms from the end of the stage before")
        print()
        print(Markdown.table(["stage", "p50 ms", "p99 ms", "max ms"], names.indices.map { i in
            let values = rows.map { $0[i] }
            return [names[i], EndpointLatency.pct(values, 0.5), EndpointLatency.pct(values, 0.99), EndpointLatency.pct(values, 1)]
        }))
        if let json {
            var runs = (try? JSONDecoder().decode([Run].self, from: Data(contentsOf: URL(fileURLWithPath: json)))) ?? []
            runs.append(Run(datastore: datastore, policies: backgroundPolicies, pods: count, stages: names.indices.map { i in
                let values = rows.map { $0[i] }
                return Stage(stage: names[i], p50: EndpointLatency.quantile(values, 0.5) ?? 0, p99: EndpointLatency.quantile(values, 0.99) ?? 0)
            }))
            try writeJSON(runs, to: json)
        }
    }

    /// The pod's address in an ADD result.
    static func address(_ result: String) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(result.utf8)) as? [String: Any],
              let ips = object["ips"] as? [[String: Any]], let address = ips.first?["address"] as? String else { return nil }
        return String(address.split(separator: "/")[0])
    }

    /// The marks of the plugin's timing line.
    static func marks(_ stderr: String) throws -> [String: Double] {
        guard let line = stderr.split(separator: "\n").last(where: { $0.hasPrefix("{\"command\"") }),
              let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let list = object["marks"] as? [[Any]] else { throw RunnerError("manx-cni printed no timings: \(stderr)") }
        var marks: [String: Double] = [:]
        for pair in list {
            if let name = pair.first as? String, let t = pair.last as? Double { marks[name] = t }
        }
        return marks
    }
}
