import Foundation
import ManxBPF
import ManxCompiler
import ManxDataplane
import ManxMapLayout
import ManxModel
import ManxNodeState
import ManxReference
import XCTest

/// The compiled maps plus the real BPF program, run with BPF_PROG_TEST_RUN,
/// against the reference evaluator, which interprets the resources directly.
/// Random policy sets (tiers, Pass, Deny, Log, notNets, notPorts, ranges,
/// named ports, network sets, ...) and random packets; every packet is a
/// new flow. Replay a failure with MANX_DIFF_SEED=<seed>.
final class DifferentialTests: XCTestCase {
    func env(_ name: String) -> Int? { ProcessInfo.processInfo.environment[name].flatMap { Int($0) } }

    func testBPFAgreesWithReferenceEvaluator() throws {
        try requireKernel()
        let seed = env("MANX_DIFF_SEED").map(UInt64.init) ?? UInt64.random(in: 1...UInt64(Int32.max))
        let sets = env("MANX_DIFF_SETS") ?? 200
        let packetsPerSet = env("MANX_DIFF_PACKETS") ?? 5000
        print("differential test: seed \(seed), \(sets) policy sets x \(packetsPerSet) packets")

        let fakeIfindex: [String: Int32] = ["ep0": 1001, "ep1": 1002, "ep2": 1003]
        let dataplane = try Dataplane(paths: NodePaths(node: testPrefix("diff")),
                                      interfaces: .init(resolve: { fakeIfindex[$0] }, attach: false))
        defer { try? dataplane.uninstall() }
        let compiler = PolicyCompiler(recovering: dataplane.allocations)
        var failures: [String] = []
        var mismatches = 0, checked = 0, allowed = 0
        let started = Date()

        for set in 0..<sets {
            let setSeed = seed &+ UInt64(set) &* 7919
            var gen = RandomPolicySet(seed: setSeed)
            let resources: ResourceSet
            do {
                resources = try ResourceSet.decode(files: [("random.yaml", gen.yaml)])
            } catch {
                XCTFail("seed \(seed): generated policy set \(set) did not decode: \(error)\n\(gen.yaml)")
                return
            }
            let state = compiler.compile(resources)
            _ = try dataplane.apply(state)
            let oracle = ReferenceEvaluator(resources)
            let endpoints = try (0..<3).map { i in
                try XCTUnwrap(dataplane.maps.endpoints.lookup(UInt32(1001 + i), as: manx_endpoint.self))
            }
            let tables = try endpoints.map { try XCTUnwrap(dataplane.maps.conntrack.inner(at: $0.id)) }
            var current = -1
            for _ in 0..<packetsPerSet {
                let probe = gen.probe()
                let pod = gen.pods[probe.endpoint]
                let key = "\(pod.namespace)/\(pod.name)"
                let direction: Policy.Direction = probe.ingress ? .ingress : .egress
                let peer = IPv4Address(probe.peer)!
                let expected = oracle.allows(endpoint: key, direction: direction, peer: peer, proto: probe.proto, port: probe.port)
                if current != probe.endpoint {
                    try dataplane.maps.endpoints.update(UInt32(1), endpoints[probe.endpoint])
                    current = probe.endpoint
                }
                let sport = UInt16.random(in: 32768...65535, using: &gen.rng)
                let (src, dst) = probe.ingress ? (probe.peer, pod.ip) : (pod.ip, probe.peer)
                let frame = Self.frame(proto: probe.proto, src: src, sport: sport, dst: dst, port: probe.port)
                let program = probe.ingress ? dataplane.toWorkload : dataplane.fromWorkload
                let verdict = try program.testRun(packet: frame, ifindex: 1, ingressIfindex: 1).returnValue
                let bpfAllowed = verdict == TC_ACT_OK
                checked += 1
                if bpfAllowed {
                    allowed += 1
                    try Self.forgetFlow(tables[probe.endpoint], proto: probe.proto, src: src, sport: sport, dst: dst, port: probe.port)
                }
                if bpfAllowed != expected {
                    mismatches += 1
                    if failures.count < 8 {
                        let ep = state.endpoint(key)!
                        let table = state.decide(ruleset: probe.ingress ? ep.ingressRuleset : ep.egressRuleset,
                                                 peer: peer, proto: probe.proto, port: probe.port)
                        let why = oracle.explain(endpoint: key, direction: direction, peer: peer, proto: probe.proto, port: probe.port).why
                        failures.append("set \(set) (seed \(setSeed)): \(key) \(direction.rawValue) peer \(probe.peer) proto \(probe.proto) port \(probe.port): reference \(expected ? "allow" : "deny") (\(why)), BPF \(bpfAllowed ? "allow" : "deny"), compiled table \(table.verdict) rule \(state.rules[table.ruleID].map { "\($0.policy) #\($0.index ?? -1)" } ?? "\(table.ruleID)")")
                        if failures.count == 1 { failures.append("policy set:\n\(gen.yaml)") }
                    }
                }
            }
        }
        let seconds = Date().timeIntervalSince(started)
        print("differential test: \(checked) packets (\(allowed) allowed), \(mismatches) mismatches, \(String(format: "%.1f", seconds)) s")
        XCTAssertEqual(mismatches, 0, "seed \(seed): replay with MANX_DIFF_SEED=\(seed)\n" + failures.joined(separator: "\n"))
    }

    static func frame(proto: UInt8, src: String, sport: UInt16, dst: String, port: UInt16) -> [UInt8] {
        switch proto {
        case 6: return Frame.tcp(src, sport, dst, port, flags: Frame.syn)
        case 17: return Frame.udp(src, sport, dst, port)
        case 132: // SCTP common header + an INIT chunk
            return Frame.ipv4(src: src, dst: dst, proto: 132, Frame.be16(sport) + Frame.be16(port) + [0, 0, 0, 0, 0, 0, 0, 0]
                              + [1, 0, 0, 20] + [UInt8](repeating: 1, count: 16))
        case 1: // type and code from the policy "port"; echo carries an id
            return Frame.ipv4(src: src, dst: dst, proto: 1, [UInt8(port >> 8), UInt8(port & 0xff), 0, 0] + Frame.be16(sport) + [0, 1])
        default:
            return Frame.ipv4(src: src, dst: dst, proto: proto, [0, 0, 0x08, 0])
        }
    }

    /// Deletes the flow an allowed packet created, so every probe is a new
    /// flow, as the reference evaluator assumes.
    static func forgetFlow(_ ct: BPFMap, proto: UInt8, src: String, sport: UInt16, dst: String, port: UInt16) throws {
        let s = IPv4Address(src)!.networkOrder, d = IPv4Address(dst)!.networkOrder
        var ps: UInt16 = 0, pd: UInt16 = 0, query: UInt8 = 0
        switch proto {
        case 6, 17, 132: ps = sport.bigEndian; pd = port.bigEndian
        case 1 where port >> 8 == 8: ps = sport.bigEndian; pd = sport.bigEndian; query = 8 // only requests open flows
        default: break
        }
        try ct.delete(manx_ct_key(addr_a: s, addr_b: d, port_a: ps, port_b: pd, proto: proto, query: query, pad: (0, 0)))
        try ct.delete(manx_ct_key(addr_a: d, addr_b: s, port_a: pd, port_b: ps, proto: proto, query: query, pad: (0, 0)))
    }
}
