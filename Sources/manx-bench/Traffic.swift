import ArgumentParser
import Foundation
import ManxConformance

/// Real traffic through a simulated node, for every dataplane at several
/// rule counts, with the no-policy baseline measured in the same run:
/// new-connection rate, UDP request/response latency and TCP throughput.
struct Traffic: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connection rate, latency and throughput per dataplane and rule count.")

    @Option(help: "Comma-separated rule counts.")
    var rules: String = "10,1000,10000,100000"

    @Option(help: "Comma-separated modes: none, bpf, iptables (nft), iptables-legacy.")
    var modes: String = "none,bpf,iptables,iptables-legacy"

    @Option(help: "Seconds per measurement.")
    var seconds: Double = 2

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
        var rows: [Row] = []
        for mode in modes.split(separator: ",").map(String.init) {
            for n in (mode == "none" ? [0] : counts) {
                rows.append(try measure(mode: mode, rules: n, bin: bin))
                FileHandle.standardError.write(Data("traffic: \(mode) \(n) rules done\n".utf8))
            }
        }
        let baseline = rows.first { $0.mode == "none" }
        let header = ["mode", "rules", "apply s", "conn/s", "conn/s vs none", "RR p50 µs", "RR p99 µs", "TCP Gbit/s"]
        print(Markdown.table(header, rows.map { r in
            [r.mode, "\(r.rules)", String(format: "%.2f", r.applySeconds), String(format: "%.0f", r.connectionsPerSecond),
             baseline.map { String(format: "%.2f", r.connectionsPerSecond / $0.connectionsPerSecond) } ?? "-",
             String(format: "%.0f", r.rrP50Microseconds), String(format: "%.0f", r.rrP99Microseconds),
             String(format: "%.2f", r.throughputGbps)]
        }))
        if let json {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try enc.encode(rows).write(to: URL(fileURLWithPath: json))
        }
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

    func measure(mode: String, rules n: Int, bin: String) throws -> Row {
        let prefix = "mxbt\(getpid() % 1000)"
        let lab = Lab(prefix: prefix)
        let ds = "/tmp/\(prefix)-ds"
        let pins = "/sys/fs/bpf/manx/\(prefix)"
        defer {
            lab.teardown()
            try? FileManager.default.removeItem(atPath: ds)
            try? FileManager.default.removeItem(atPath: pins)
            try? FileManager.default.removeItem(atPath: "/run/manx/\(prefix)")
        }
        try FileManager.default.createDirectory(atPath: ds, withIntermediateDirectories: true)
        try lab.createNode()
        let (clientNs, clientIf) = try lab.addPod("c", ip: "10.60.0.1")
        let (serverNs, serverIf) = try lab.addPod("s", ip: "10.60.0.2")
        for ns in [clientNs, serverNs] {
            _ = try? run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        }
        _ = try? run(["ip", "netns", "exec", clientNs, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])
        _ = try lab.spawn(in: serverNs, [bin + "/manx-probe", "serve", "--ports", "80", "--ready-file", "/tmp/\(prefix)-ready"], log: "/dev/null")
        _ = try lab.spawn(in: serverNs, ["iperf3", "-s", "-p", "5201"], log: "/dev/null")
        try "".write(toFile: "\(ds)/.keep", atomically: true, encoding: .utf8)
        try Self.resources(rules: n, client: clientIf, server: serverIf).write(toFile: "\(ds)/bench.yaml", atomically: true, encoding: .utf8)

        var applySeconds = 0.0
        if mode != "none" {
            var args = ["nsenter", "--net=/run/netns/\(lab.node)", bin + "/manxd", "--once", "--datastore", ds, "--node", prefix, "--log-level", "warning"]
            if mode == "iptables" { args += ["--dataplane", "iptables", "--iptables-backend", "nft"] }
            if mode == "iptables-legacy" { args += ["--dataplane", "iptables", "--iptables-backend", "legacy"] }
            let t0 = Date()
            try run(args)
            applySeconds = Date().timeIntervalSince(t0)
        }
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: "/tmp/\(prefix)-ready") { usleep(20_000) }
        usleep(200_000) // iperf3 listening

        let s = String(seconds)
        // The connection rate is the noisiest number on a shared machine:
        // the median of three runs.
        let rates = try (0..<3).map { _ in
            try json(run(["ip", "netns", "exec", clientNs, bin + "/manx-probe", "connrate", "--seconds", s, "10.60.0.2:80"]))["rate"] as? Double ?? 0
        }.sorted()
        let rr = try json(run(["ip", "netns", "exec", clientNs, bin + "/manx-probe", "rr", "--seconds", s, "10.60.0.2:80"]))
        let iperf = try json(run(["ip", "netns", "exec", clientNs, "iperf3", "-c", "10.60.0.2", "-p", "5201", "-t", s, "-J"]))
        let bps = ((iperf["end"] as? [String: Any])?["sum_received"] as? [String: Any])?["bits_per_second"] as? Double ?? 0
        try? FileManager.default.removeItem(atPath: "/tmp/\(prefix)-ready")
        return Row(mode: mode, rules: n, applySeconds: applySeconds,
                   connectionsPerSecond: rates[1],
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
    func run(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        let err = Pipe()
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw ValidationError("\(args.joined(separator: " ")) failed: \(String(decoding: errData, as: UTF8.self))")
        }
        return String(decoding: data, as: UTF8.self)
    }
}
