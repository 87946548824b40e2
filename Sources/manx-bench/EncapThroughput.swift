import ArgumentParser
import Foundation
import ManxCommand
import ManxConformance
import ManxModel

/// iperf3 TCP between pods on two nodes of a simulated cluster, for each way
/// of crossing the underlay, all set up at once and measured round robin in
/// one run so that the ratios hold on a noisy machine.
struct EncapThroughput: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encap-throughput",
        abstract: "Pod-to-pod TCP throughput across nodes: routed, IPIP (BPF), VXLAN (BPF), VXLAN (device).")

    @Option(help: "Comma-separated: none, ipip, vxlan, vxlan-device.")
    var modes = "none,ipip,vxlan,vxlan-device"

    @Option(help: "Seconds per iperf3 run.")
    var seconds = 3

    @Option(help: "Rounds across all modes (medians are reported).")
    var rounds = 3

    @Option(help: "Write results as JSON here.")
    var json: String?

    struct Row: Codable {
        var mode: String
        var podMTU: Int
        var medianGbps: Double
        var samplesGbps: [Double]
        var retransmits: Int
    }

    func run() throws {
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let modeList = modes.split(separator: ",").map(String.init)
        var clusters: [(String, Cluster)] = []
        defer { for (_, c) in clusters { c.teardown() } }
        for (i, mode) in modeList.enumerated() {
            var o = Cluster.Options(binDirectory: bin)
            o.nodes = 2
            switch mode {
            case "none": o.encapsulation = .none
            case "ipip": o.encapsulation = .ipip
            case "vxlan": o.encapsulation = .vxlan
            case "vxlan-device": o.encapsulation = .vxlan; o.vxlanDevice = true
            default: throw ValidationError("unknown mode \(mode)")
            }
            let c = Cluster(prefix: "mxbe\(i)", options: o)
            Cluster.teardown(prefix: c.prefix)
            clusters.append((mode, c))
            try c.up()
            try c.datastore.write("pods.yaml", """
            apiVersion: v1
            kind: Pod
            metadata: {name: client, namespace: default}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: server, namespace: default}
            """)
            try c.addPod("default/client", node: c.nodeNames[0])
            let server = try c.addPod("default/server", node: c.nodeNames[1])
            _ = try c.lab.spawn(in: server.netns, ["iperf3", "-s", "-p", "5201"], log: "/dev/null")
        }
        usleep(300_000)
        var samples: [String: [(Double, Int)]] = [:]
        for _ in 0..<rounds {
            for (mode, c) in clusters { samples[mode, default: []].append(try measure(c)) }
        }
        var rows: [Row] = []
        for (mode, c) in clusters {
            let list = samples[mode]!
            let gbps = list.map(\.0)
            let mtuText = try run(["ip", "netns", "exec", c.pods["default/client"]!.netns, "cat", "/sys/class/net/eth0/mtu"])
            let mtu = Int(mtuText.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            rows.append(Row(mode: mode, podMTU: mtu, medianGbps: gbps.sorted()[gbps.count / 2], samplesGbps: gbps,
                            retransmits: list.map(\.1).reduce(0, +)))
        }
        let base = rows.first { $0.mode == "none" }?.medianGbps
        print(Markdown.table(["path", "pod MTU", "Gbit/s (median)", "vs routed", "samples", "retransmits"], rows.map { r in
            [r.mode, "\(r.podMTU)", String(format: "%.2f", r.medianGbps), base.map { String(format: "%.2f", r.medianGbps / $0) } ?? "-",
             r.samplesGbps.map { String(format: "%.1f", $0) }.joined(separator: ", "), "\(r.retransmits)"]
        }))
        if let json { try writeJSON(rows, to: json) }
    }

    /// One iperf3 run client -> server; Gbit/s received and retransmits.
    private func measure(_ c: Cluster) throws -> (Double, Int) {
        let client = c.pods["default/client"]!, server = c.pods["default/server"]!
        let out = try run(["ip", "netns", "exec", client.netns, "iperf3", "-c", server.ip, "-p", "5201", "-t", String(seconds), "-J"])
        guard let object = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any],
              let end = object["end"] as? [String: Any],
              let received = end["sum_received"] as? [String: Any], let bps = received["bits_per_second"] as? Double
        else { throw ValidationError("iperf3 gave no result: \(out.prefix(400))") }
        let retransmits = (end["sum_sent"] as? [String: Any])?["retransmits"] as? Int ?? 0
        return (bps / 1e9, retransmits)
    }

    /// stdout whatever the status: iperf3 -J reports its errors in its JSON.
    private func run(_ args: [String]) throws -> String { try Command.run(args).stdout }
}
