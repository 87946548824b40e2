import ArgumentParser
import Foundation
import ManxBPF
import ManxCompiler
import ManxDataplane
import ManxDatastore
import ManxMapLayout
import ManxModel
import ManxNodeState

/// Control-plane costs, measured in process on real maps (nothing attached):
/// decode + compile + program N policies over 100 endpoints, one policy
/// change on that loaded node, and map memory per endpoint and per rule.
struct ControlPlane: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "control-plane",
                                                    abstract: "Compile/program times and map memory.")

    @Option(help: "Comma-separated policy counts.")
    var policies: String = "1000,10000"

    @Option(help: "Endpoints on the node.")
    var endpoints: Int = 100

    @Option(help: "Changes measured on the loaded node (policy changes, then endpoint additions).")
    var changes: Int = 20

    @Option(help: "Write results as JSON here.")
    var json: String?

    struct Row: Codable {
        var policies: Int
        var endpoints: Int
        var decodeSeconds: Double
        var compileSeconds: Double
        var programSeconds: Double
        var changeSeconds: Double
        var rulesets: Int
        var policyEntries: Int
        var mapBytes: Int
    }

    /// Each policy selects one app label (of 20) and allows TCP from one /32
    /// and one port; endpoints carry those labels round robin.
    static func resources(policies n: Int, endpoints m: Int, changed: Int? = nil) -> String {
        var y = "apiVersion: v1\nkind: Namespace\nmetadata: {name: load}\n"
        for i in 0..<m {
            y += "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p\(i), namespace: load, labels: {app: a\(i % 20)}, annotations: {manx.io/interface: cp\(i)}}\nstatus: {podIP: 10.70.\(i / 250).\(i % 250 + 1)}\n"
        }
        for j in 0..<n {
            let port = j == changed ? 1 + (PacketCost.port(j) % 30000) + 1 : PacketCost.port(j)
            y += "---\napiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: pol\(j), namespace: load}\nspec: {order: \(j % 100), selector: \"app == 'a\(j % 20)'\", ingress: [{action: Allow, protocol: TCP, source: {nets: [\(PacketCost.peer(j))/32]}, destination: {ports: [\(port)]}}]}\n"
        }
        return y
    }

    /// The interface annotation of `resources`' pods (a regular expression):
    /// removed, they are peers elsewhere rather than this node's endpoints.
    static let interfaceAnnotation = #", annotations: \{manx.io/interface: cp[0-9]+\}"#

    /// The documents of `resources`, one per key, as a keyed datastore
    /// holds them: the JSON `bpfctl apply` writes into etcd.
    static func keyed(_ yaml: String) throws -> [String: String] {
        var keys: [String: String] = [:]
        for (i, doc) in try ResourceSet.documents(file: "bench.yaml", text: yaml).enumerated() { keys["k\(i)"] = doc.json }
        return keys
    }

    /// Stage times of one pass, in ms: `program` until the new state is in
    /// force (the generation flip), `cleanup` what the apply does after it.
    struct Stages {
        var decode = 0.0, assemble = 0.0, compile = 0.0, program = 0.0, cleanup = 0.0
        /// Until in force.
        var total: Double { decode + assemble + compile + program }
    }

    /// One pass of the daemon's path: the update into the cache (decoding
    /// only the keys it carries), assemble, compile, program.
    static func pass(_ update: DatastoreUpdate, cache: ResourceCache, compiler: PolicyCompiler,
                     dataplane: Dataplane) throws -> (Stages, CompiledState) {
        var s = Stages()
        let clock = ContinuousClock()
        func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
        s.decode = ms(clock.measure { cache.apply(update) })
        var resources = ResourceSet()
        s.assemble = try ms(clock.measure { resources = try cache.assemble() })
        var state = CompiledState()
        s.compile = ms(clock.measure { state = compiler.compile(resources) })
        var inForce = Duration.zero
        let apply = try ms(clock.measure { inForce = try dataplane.apply(state).inForce })
        s.program = ms(inForce)
        s.cleanup = apply - s.program
        return (s, state)
    }

    func run() throws {
        let prefix = "mxcp\(getpid() % 10000)"
        var rows: [Row] = []
        var changeRows: [[String]] = []
        for n in policies.split(separator: ",").compactMap({ Int($0) }) {
            let paths = NodePaths(node: "\(prefix)-\(n)")
            let ifindexes = Dictionary(uniqueKeysWithValues: (0..<endpoints + changes).map { ("cp\($0)", Int32(2000 + $0)) })
            let dataplane = try Dataplane(paths: paths, interfaces: .init(resolve: { ifindexes[$0] }, attach: false))
            defer { try? dataplane.uninstall() }
            let before = try Self.mapBytes(paths)
            let compiler = PolicyCompiler()
            let cache = ResourceCache()
            let keys = try Self.keyed(Self.resources(policies: n, endpoints: endpoints))
            let (initial, state) = try Self.pass(.snapshot(keys, revision: 1), cache: cache, compiler: compiler, dataplane: dataplane)
            let after = try Self.mapBytes(paths)
            // One policy changes its port, back and forth; then new
            // endpoints appear, one at a time.
            let changed = try Self.keyed(Self.resources(policies: n, endpoints: endpoints, changed: n / 2))
            let key = changed.first { keys[$0.key] != $0.value }!.key
            var policyChanges: [Stages] = []
            var endpointAdds: [Stages] = []
            for i in 0..<changes {
                let text = i % 2 == 0 ? changed[key]! : keys[key]!
                policyChanges.append(try Self.pass(.changes([key: text], revision: Int64(2 + i)), cache: cache, compiler: compiler,
                                                   dataplane: dataplane).0)
            }
            for i in 0..<changes {
                let e = endpoints + i
                let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p\(e), namespace: load, labels: {app: a\(e % 20)}, annotations: {manx.io/interface: cp\(e)}}\nstatus: {podIP: 10.70.\(e / 250).\(e % 250 + 1)}\n"
                endpointAdds.append(try Self.pass(.changes(["pod\(e)": try Self.keyed(pod)["k0"]!], revision: Int64(2 + changes + i)), cache: cache,
                                                  compiler: compiler, dataplane: dataplane).0)
            }
            rows.append(Row(policies: n, endpoints: endpoints, decodeSeconds: initial.decode / 1000,
                            compileSeconds: (initial.assemble + initial.compile) / 1000, programSeconds: initial.program / 1000,
                            changeSeconds: Self.percentile(policyChanges.map(\.total), 0.99) / 1000, rulesets: state.rulesets.count,
                            policyEntries: state.rulesets.values.reduce(0) { $0 + $1.count }, mapBytes: after - before))
            for (what, samples) in [("one policy changed", policyChanges), ("one endpoint added", endpointAdds)] {
                func p(_ q: Double, _ f: (Stages) -> Double) -> String { String(format: "%.2f", Self.percentile(samples.map(f), q)) }
                changeRows.append(["\(n)", what, "\(samples.count)", p(0.5, \.decode), p(0.5, \.assemble), p(0.5, \.compile),
                                   p(0.5, \.program), p(0.5, \.total), p(0.99, \.total), p(0.5, \.cleanup)])
            }
            let expiry = try ContinuousClock().measure { _ = try dataplane.expireConntrack(now: 0) }
            FileHandle.standardError.write(Data("control-plane: \(n) policies done; one conntrack expiry pass over \(endpoints + changes) tables: \(expiry)\n".utf8))
        }
        print(Markdown.table(
            ["policies", "endpoints", "decode s", "assemble+compile s", "program s", "initial load s", "one change p99 s", "rule sets", "policy entries", "map memory"],
            rows.map { r in
                [String(r.policies), String(r.endpoints), String(format: "%.2f", r.decodeSeconds), String(format: "%.2f", r.compileSeconds),
                 String(format: "%.2f", r.programSeconds), String(format: "%.2f", r.decodeSeconds + r.compileSeconds + r.programSeconds),
                 String(format: "%.3f", r.changeSeconds), String(r.rulesets), String(r.policyEntries),
                 String(format: "%.1f MiB", Double(r.mapBytes) / 1_048_576)]
            }))
        print()
        print("Changes on the loaded node, one key each (as etcd delivers them), in process, until in force (the generation flip); ms:")
        print()
        print(Markdown.table(["policies", "change", "samples", "decode p50", "assemble p50", "compile p50", "program p50", "total p50", "total p99",
                              "after the flip p50"],
                             changeRows))
        if let json { try writeJSON(rows, to: json) }
    }

    static func percentile(_ values: [Double], _ q: Double) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
    }

    /// The kernel's own account of the node's maps (memlock in fdinfo).
    static func mapBytes(_ paths: NodePaths) throws -> Int {
        let maps = try KernelMaps.openPinned(paths)
        return [maps.endpoints, maps.ipcache, maps.policy, maps.conntrack, maps.counters, maps.ruleHits, maps.events,
                maps.endpointPolicy, maps.generation, maps.allocations]
            .reduce(0) { $0 + memlock($1) }
    }

    static func memlock(_ map: BPFMap) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/fdinfo/\(map.fd.raw)", encoding: .utf8) else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("memlock:") {
            return Int(line.split(separator: "\t").last?.trimmingCharacters(in: .whitespaces) ?? "") ?? 0
        }
        return 0
    }
}
