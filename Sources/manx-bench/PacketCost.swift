import ArgumentParser
import Foundation
import ManxBPF
import ManxBPFObjects
import ManxCompiler
import ManxDataplane
import ManxMapLayout
import ManxModel
import ManxNodeState

/// Per-packet cost of the workload program against one endpoint with N
/// rules, measured with BPF_PROG_TEST_RUN next to a pass-through program
/// in the same run. Nothing is attached to any interface.
struct PacketCost: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "packet-cost",
                                                    abstract: "BPF_PROG_TEST_RUN ns/packet at several rule counts.")

    @Option(help: "Comma-separated rule counts.")
    var rules: String = "10,100,1000,10000,100000"

    @Option(help: "Repetitions per timing (repeat=N) for paths without state changes.")
    var repeatCount: Int = 200_000

    @Option(help: "Single runs for new allowed flows (each creates conntrack).")
    var newFlows: Int = 3000

    @Option(help: "Write results as JSON here.")
    var json: String?

    struct Row: Codable {
        var rules: Int
        var passThroughNs: UInt32
        var newFlowDeniedNs: UInt32
        var newFlowAllowedMedianNs: UInt32
        var establishedNs: UInt32
        var firstFragmentMedianNs: UInt32
        var laterFragmentNs: UInt32
        var compileSeconds: Double
    }

    func run() throws {
        let counts = rules.split(separator: ",").compactMap { Int($0) }
        let prefix = "mxbench\(getpid() % 10000)"
        let baselineObject = try BPFObject(elf: BPFObjects.elf(.baseline), name: "manx_baseline", pinRoot: "/sys/fs/bpf/manx/\(prefix)-base")
        try baselineObject.load()
        let pass = try baselineObject.program(named: "manx_tc_pass")
        defer { try? BPFFS.removeTree("/sys/fs/bpf/manx/\(prefix)-base") }

        var rows: [[String]] = []
        var results: [Row] = []
        for n in counts {
            let paths = NodePaths(node: "\(prefix)-\(n)")
            let dataplane = try Dataplane(paths: paths, interfaces: .init(resolve: { $0 == "bench-web" ? 1 : nil }, attach: false))
            defer { try? dataplane.uninstall() }
            let yaml = Self.resources(rules: n)
            let t0 = Date()
            let resources = try ResourceSet.decode(files: [("bench.yaml", yaml)])
            let t1 = Date()
            let state = PolicyCompiler().compile(resources)
            let t2 = Date()
            let report = try dataplane.apply(state)
            let t3 = Date()

            let last = Self.peer(n - 1)
            let denied = Self.tcp(src: "192.0.2.1", sport: 40000, dst: "10.50.0.1", dport: 80, flags: 0x02)
            let established = Self.tcp(src: last, sport: 40001, dst: "10.50.0.1", dport: Self.port(n - 1), flags: 0x10)
            let baseline = try pass.testRun(packet: denied, repeat: repeatCount, ifindex: 1).durationNanoseconds
            let deniedNs = try dataplane.toWorkload.testRun(packet: denied, repeat: repeatCount, ifindex: 1, ingressIfindex: 1)
            precondition(deniedNs.returnValue == 2, "the denied packet must be dropped")
            // Establish, then time the conntrack fast path.
            _ = try dataplane.toWorkload.testRun(packet: Self.tcp(src: last, sport: 40001, dst: "10.50.0.1", dport: Self.port(n - 1), flags: 0x02), ifindex: 1, ingressIfindex: 1)
            let estNs = try dataplane.toWorkload.testRun(packet: established, repeat: repeatCount, ifindex: 1, ingressIfindex: 1)
            precondition(estNs.returnValue == 0, "the established packet must pass")
            // New allowed flows: one run each, a fresh source port each time.
            var samples: [UInt32] = []
            for i in 0..<newFlows {
                let syn = Self.tcp(src: last, sport: UInt16(41000 + i % 20000), dst: "10.50.0.1", dport: Self.port(n - 1), flags: 0x02)
                let r = try dataplane.toWorkload.testRun(packet: syn, ifindex: 1, ingressIfindex: 1)
                precondition(r.returnValue == 0, "the rule-matching packet must pass")
                samples.append(r.durationNanoseconds)
                if i % 20000 == 19999 { try dataplane.conntrackTable(ifindex: 1)?.clear(keyType: manx_ct_key.self) }
            }
            samples.sort()
            let newNs = samples[samples.count / 2]
            // Fragments of the established flow: a first fragment (the flow's
            // fast path, then its datagram recorded) is timed as single runs,
            // each a new datagram; a later fragment changes nothing, so repeat.
            var firstSamples: [UInt32] = []
            for i in 0..<newFlows {
                let first = Self.tcp(src: last, sport: 40001, dst: "10.50.0.1", dport: Self.port(n - 1), flags: 0x10,
                                     ipID: UInt16(truncatingIfNeeded: i + 2), fragment: 0x2000)
                let r = try dataplane.toWorkload.testRun(packet: first, ifindex: 1, ingressIfindex: 1)
                precondition(r.returnValue == 0, "the first fragment of an established flow must pass")
                firstSamples.append(r.durationNanoseconds)
            }
            firstSamples.sort()
            let firstNs = firstSamples[firstSamples.count / 2]
            let later = Self.tcp(src: last, sport: 40001, dst: "10.50.0.1", dport: Self.port(n - 1), flags: 0x10,
                                 ipID: 2, fragment: 3) // offset 24 bytes, of the datagram recorded first above
            let laterNs = try dataplane.toWorkload.testRun(packet: later, repeat: repeatCount, ifindex: 1, ingressIfindex: 1)
            precondition(laterNs.returnValue == 0, "a later fragment of an allowed datagram must pass")
            let entries = state.rulesets.values.reduce(0) { $0 + $1.count }
            rows.append([
                "\(n)", "\(state.ipcache.count)", "\(entries)",
                String(format: "%.0f", t1.timeIntervalSince(t0) * 1000), String(format: "%.0f", t2.timeIntervalSince(t1) * 1000),
                String(format: "%.0f", t3.timeIntervalSince(t2) * 1000),
                "\(baseline)", "\(deniedNs.durationNanoseconds)", "\(newNs)", "\(estNs.durationNanoseconds)",
                String(format: "%.2f", Double(deniedNs.durationNanoseconds) / Double(max(baseline, 1))),
                "\(firstNs) (\(String(format: "%.1f", Double(firstNs) / Double(max(baseline, 1))))x)",
                "\(laterNs.durationNanoseconds) (\(String(format: "%.1f", Double(laterNs.durationNanoseconds) / Double(max(baseline, 1))))x)",
            ])
            _ = report
            results.append(Row(rules: n, passThroughNs: baseline, newFlowDeniedNs: deniedNs.durationNanoseconds,
                               newFlowAllowedMedianNs: newNs, establishedNs: estNs.durationNanoseconds,
                               firstFragmentMedianNs: firstNs, laterFragmentNs: laterNs.durationNanoseconds,
                               compileSeconds: t2.timeIntervalSince(t1)))
            FileHandle.standardError.write(Data("rules \(n): done\n".utf8))
        }
        let header = ["rules", "ipcache", "policy entries", "decode ms", "compile ms", "apply ms",
                      "pass-through ns", "new flow denied ns", "new flow allowed ns (median)", "established ns", "denied / pass-through",
                      "first fragment ns (median, x pass-through)", "later fragment ns (x pass-through)"]
        let table = Markdown.table(header, rows)
        print(table)
        if let json { try writeJSON(results, to: json) }
    }

    /// Rule i allows TCP to port port(i) from its own /32: one endpoint,
    /// N distinct peers and ports, the matching packet hits the last rule.
    static func peer(_ i: Int) -> String { "172.\(16 + i / 65536).\(i / 256 % 256).\(i % 256)" }
    static func port(_ i: Int) -> UInt16 { UInt16(1 + i % 30000) }

    static func resources(rules n: Int) -> String {
        var y = """
        apiVersion: v1
        kind: Namespace
        metadata: {name: bench}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web, namespace: bench, labels: {app: web}, annotations: {manx.io/interface: bench-web}}
        status: {podIP: 10.50.0.1}
        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: many-rules, namespace: bench}
        spec:
          selector: app == 'web'
          ingress:

        """
        y.reserveCapacity(n * 90)
        for i in 0..<n {
            y += "  - {action: Allow, protocol: TCP, source: {nets: [\(peer(i))/32]}, destination: {ports: [\(port(i))]}}\n"
        }
        return y
    }

    /// `fragment`: 0 (DF set), or the fragment field: 0x2000 (more
    /// fragments) | offset in 8-byte units.
    static func tcp(src: String, sport: UInt16, dst: String, dport: UInt16, flags: UInt8, ipID: UInt16 = 1, fragment: UInt16 = 0) -> [UInt8] {
        func ip(_ s: String) -> [UInt8] { s.split(separator: ".").map { UInt8($0)! } }
        func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
        let l4 = be16(sport) + be16(dport) + [0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]
        let ipHeader: [UInt8] = [0x45, 0] + be16(40) + be16(ipID) + be16(fragment == 0 ? 0x4000 : fragment) + [64, 6, 0, 0] + ip(src) + ip(dst)
        return [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00] + ipHeader + l4
    }
}

/// Raw results, for plots and later comparison.
func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    try enc.encode(value).write(to: URL(fileURLWithPath: path))
}

enum Markdown {
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let lines = ["| " + header.joined(separator: " | ") + " |", "|" + header.map { _ in "---:" }.joined(separator: "|") + "|"]
            + rows.map { "| " + $0.joined(separator: " | ") + " |" }
        return lines.joined(separator: "\n")
    }
}
