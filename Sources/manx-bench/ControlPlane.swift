import ArgumentParser
import Foundation
import ManxBPF
import ManxCompiler
import ManxDataplane
import ManxMapLayout
import ManxModel

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

    func run() throws {
        let prefix = "mxcp\(getpid() % 10000)"
        var rows: [Row] = []
        for n in policies.split(separator: ",").compactMap({ Int($0) }) {
            let paths = NodePaths(node: "\(prefix)-\(n)")
            let ifindexes = Dictionary(uniqueKeysWithValues: (0..<endpoints).map { ("cp\($0)", Int32(2000 + $0)) })
            let dataplane = try Dataplane(paths: paths, interfaces: .init(resolve: { ifindexes[$0] }, attach: false))
            defer { try? dataplane.uninstall() }
            let before = try Self.mapBytes(paths)
            let compiler = PolicyCompiler()
            let t0 = Date()
            let resources = try ResourceSet.decode(files: [("load.yaml", Self.resources(policies: n, endpoints: endpoints))])
            let t1 = Date()
            let state = compiler.compile(resources)
            let t2 = Date()
            _ = try dataplane.apply(state)
            let t3 = Date()
            let after = try Self.mapBytes(paths)
            // One policy changes: decode, compile and program again (the daemon's path).
            let changed = try ResourceSet.decode(files: [("load.yaml", Self.resources(policies: n, endpoints: endpoints, changed: n / 2))])
            let t4 = Date()
            _ = try dataplane.apply(compiler.compile(changed))
            let t5 = Date()
            rows.append(Row(policies: n, endpoints: endpoints, decodeSeconds: t1.timeIntervalSince(t0),
                            compileSeconds: t2.timeIntervalSince(t1), programSeconds: t3.timeIntervalSince(t2),
                            changeSeconds: t5.timeIntervalSince(t4), rulesets: state.rulesets.count,
                            policyEntries: state.rulesets.values.reduce(0) { $0 + $1.count }, mapBytes: after - before))
            FileHandle.standardError.write(Data("control-plane: \(n) policies done\n".utf8))
        }
        print(Markdown.table(
            ["policies", "endpoints", "decode s", "compile s", "program s", "compile+program s", "one change s", "rule sets", "policy entries", "map memory"],
            rows.map { r in
                [String(r.policies), String(r.endpoints), String(format: "%.2f", r.decodeSeconds), String(format: "%.2f", r.compileSeconds),
                 String(format: "%.2f", r.programSeconds), String(format: "%.2f", r.compileSeconds + r.programSeconds),
                 String(format: "%.3f", r.changeSeconds), String(r.rulesets), String(r.policyEntries),
                 String(format: "%.1f MiB", Double(r.mapBytes) / 1_048_576)]
            }))
        if let json { try writeJSON(rows, to: json) }
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
