import ArgumentParser
import Foundation
import ManxCommand
import ManxConformance
import ManxOptions

/// Real traffic through a simulated node, for every dataplane at several
/// rule counts, with the no-policy baseline measured in the same run:
/// new-connection rate, UDP request/response latency and TCP throughput.
struct Traffic: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connection rate, latency and throughput per dataplane and rule count.")

    @Option(help: "Comma-separated rule counts.")
    var rules: String = "10,1000,10000,100000"

    @Option(help: "Comma-separated: none (no policy, the baseline), and dataplanes: bpf, iptables (nft), iptables-legacy.")
    var dataplane: String = "none,bpf,iptables,iptables-legacy"

    @Option(help: "Seconds per measurement.")
    var seconds: Double = 2

    @Option(help: "Rounds of measurements across all modes (medians are reported).")
    var rounds: Int = 5

    @Option(help: "Write results as JSON here.")
    var json: String?

    struct Row: Codable {
        var mode: String
        var rules: Int
        var applySeconds: Double
        var connectionsPerSecond: Double
        var rrP50Microseconds: Double
        var rrP99Microseconds: Double
        var throughputGbps: Double
    }

    func run() throws {
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let counts = rules.split(separator: ",").compactMap { Int($0) }
        let modeList = dataplane.split(separator: ",").map(String.init)
        for mode in modeList where mode != "none" && DataplaneChoice(rawValue: mode) == nil {
            throw ValidationError("--dataplane: '\(mode)' is not none, \(DataplaneChoice.allValueStrings.joined(separator: ", "))")
        }
        var rows: [Row] = []
        // Per rule count, every mode gets its own simulated node, and the
        // measurements go round robin across them, in rounds, so drift
        // on a shared machine hits every mode alike; medians are reported.
        // The no-policy baseline is measured in every round too.
        for n in counts {
            var setups: [Setup] = []
            defer { for s in setups { s.tearDown() } }
            for (i, mode) in modeList.enumerated() {
                setups.append(try setUp(mode: mode, rules: mode == "none" ? 0 : n, index: i, bin: bin))
            }
            var samples: [String: [Row]] = [:]
            for _ in 0..<rounds {
                for setup in setups { samples[setup.mode, default: []].append(try measure(setup, bin: bin)) }
            }
            for mode in modeList {
                let list = samples[mode]!
                func median(_ key: KeyPath<Row, Double>) -> Double { list.map { $0[keyPath: key] }.sorted()[list.count / 2] }
                rows.append(Row(mode: mode, rules: n, applySeconds: list[0].applySeconds,
                                connectionsPerSecond: median(\.connectionsPerSecond),
                                rrP50Microseconds: median(\.rrP50Microseconds), rrP99Microseconds: median(\.rrP99Microseconds),
                                throughputGbps: median(\.throughputGbps)))
            }
            FileHandle.standardError.write(Data("traffic: \(n) rules done\n".utf8))
        }
        let header = ["rules", "mode", "apply s", "conn/s", "conn/s vs no policy", "RR p50 µs", "RR p99 µs", "TCP Gbit/s"]
        print(Markdown.table(header, rows.map { r in
            let base = rows.first { $0.mode == "none" && $0.rules == r.rules }
            return ["\(r.rules)", r.mode, String(format: "%.2f", r.applySeconds), String(format: "%.0f", r.connectionsPerSecond),
                    base.map { String(format: "%.2f", r.connectionsPerSecond / $0.connectionsPerSecond) } ?? "-",
                    String(format: "%.0f", r.rrP50Microseconds), String(format: "%.0f", r.rrP99Microseconds),
                    String(format: "%.2f", r.throughputGbps)]
        }))
        if let json { try writeJSON(rows, to: json) }
    }

    /// N rules on the server's ingress that the client does not match (one
    /// /32 and port each), then the rule that admits the client, last.
    static func resources(rules n: Int, client: String, server: String) -> String {
        var y = """
        apiVersion: v1
        kind: Namespace
        metadata: {name: bench}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: client, namespace: bench, labels: {app: client}, annotations: {manx.io/interface: \(client)}}
        status: {podIP: 10.60.0.1}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: server, namespace: bench, labels: {app: server}, annotations: {manx.io/interface: \(server)}}
        status: {podIP: 10.60.0.2}

        """
        guard n > 0 else { return y }
        y += """
        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: many-rules, namespace: bench}
        spec:
          selector: app == 'server'
          ingress:

        """
        for i in 0..<(n - 1) {
            y += "  - {action: Allow, protocol: TCP, source: {nets: [\(PacketCost.peer(i))/32]}, destination: {ports: [\(PacketCost.port(i))]}}\n"
        }
        y += "  - {action: Allow, source: {selector: app == 'client'}}\n"
        return y
    }

    /// One simulated node: client and server pods, servers started, the
    /// policy applied with `manxd --once` in the given mode.
    struct Setup {
        var mode: String
        var rules: Int
        var lab: Lab
        var clientNs: String
        var applySeconds: Double
        var paths: [String]

        func tearDown() {
            lab.teardown()
            for p in paths { try? FileManager.default.removeItem(atPath: p) }
        }
    }

    func setUp(mode: String, rules n: Int, index: Int, bin: String) throws -> Setup {
        let prefix = "mxbt\(getpid() % 1000)\(index)"
        let lab = Lab(prefix: prefix)
        let scratch = try makeScratchDirectory(prefix)
        let ds = "\(scratch)/ds", ready = "\(scratch)/ready"
        var setup = Setup(mode: mode, rules: n, lab: lab, clientNs: "", applySeconds: 0,
                          paths: [scratch, "/sys/fs/bpf/manx/\(prefix)", "/run/manx/\(prefix)"])
        do {
            try FileManager.default.createDirectory(atPath: ds, withIntermediateDirectories: true)
            try lab.createNode()
            let (clientNs, clientIf) = try lab.addPod("c", ip: "10.60.0.1")
            let (serverNs, serverIf) = try lab.addPod("s", ip: "10.60.0.2")
            setup.clientNs = clientNs
            for ns in [clientNs, serverNs] {
                _ = try? run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
            }
            _ = try lab.spawn(in: serverNs, [bin + "/manx-probe", "serve", "--ports", "80", "--ready-file", ready], log: "/dev/null")
            _ = try lab.spawn(in: serverNs, ["iperf3", "-s", "-p", "5201"], log: "/dev/null")
            try Self.resources(rules: n, client: clientIf, server: serverIf).write(toFile: "\(ds)/bench.yaml", atomically: true, encoding: .utf8)
            if mode != "none" {
                var args = ["nsenter", "--net=/run/netns/\(lab.node)", bin + "/manxd", "--once", "--datastore", ds, "--node", prefix, "--log-level", "warning"]
                args += DataplaneChoice(rawValue: mode)!.daemonArguments
                let t0 = Date()
                try run(args)
                setup.applySeconds = Date().timeIntervalSince(t0)
            }
            for _ in 0..<100 where !FileManager.default.fileExists(atPath: ready) { usleep(20_000) }
            usleep(200_000) // iperf3 listening
            return setup
        } catch {
            setup.tearDown()
            throw error
        }
    }

    func measure(_ setup: Setup, bin: String) throws -> Row {
        let s = String(seconds)
        let exec = ["ip", "netns", "exec", setup.clientNs]
        let conn = try json(run(exec + [bin + "/manx-probe", "connrate", "--seconds", s, "--parallel", "8", "10.60.0.2:80"]))
        let rr = try json(run(exec + [bin + "/manx-probe", "rr", "--seconds", String(seconds / 2), "10.60.0.2:80"]))
        let iperf = try json(run(exec + ["iperf3", "-c", "10.60.0.2", "-p", "5201", "-t", String(max(1, Int(seconds / 2))), "-J"]))
        let bps = ((iperf["end"] as? [String: Any])?["sum_received"] as? [String: Any])?["bits_per_second"] as? Double ?? 0
        return Row(mode: setup.mode, rules: setup.rules, applySeconds: setup.applySeconds,
                   connectionsPerSecond: conn["rate"] as? Double ?? 0,
                   rrP50Microseconds: rr["p50_us"] as? Double ?? 0, rrP99Microseconds: rr["p99_us"] as? Double ?? 0,
                   throughputGbps: bps / 1e9)
    }

    func json(_ text: String) throws -> [String: Any] {
        guard let obj = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw ValidationError("not a JSON object: \(text)")
        }
        return obj
    }

    @discardableResult
    func run(_ args: [String]) throws -> String { try Command.checked(args) }
}
