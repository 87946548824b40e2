import ManxBPF
import ManxCompiler
import ManxDataplane
import ManxMapLayout
import ManxModel
import ManxNodeState
import XCTest

/// Exact per-packet checks of the workload programs with BPF_PROG_TEST_RUN.
/// The endpoint under test is given ifindex 1 (test runs use loopback's
/// ifindex); nothing is attached to any interface.
final class WorkloadProgramTests: XCTestCase {
    var paths = NodePaths(node: "")
    var dataplane: Dataplane!
    let compiler = PolicyCompiler()

    static let pods = """
    apiVersion: v1
    kind: Namespace
    metadata: {name: shop}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: shop, labels: {app: web}, annotations: {manx.io/interface: test-web}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
    status: {podIP: 10.0.0.1}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client, namespace: shop, labels: {app: client}}
    status: {podIP: 10.0.0.2}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: stranger, namespace: shop, labels: {app: other}}
    status: {podIP: 10.0.0.3}
    """

    static let policy = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: web, namespace: shop}
    spec:
      podSelector: {matchLabels: {app: web}}
      policyTypes: [Ingress, Egress]
      ingress:
      - from: [{podSelector: {matchLabels: {app: client}}}]
        ports: [{port: http}, {protocol: UDP, port: 53}]
    """

    override func setUpWithError() throws {
        try requireKernel()
        paths = NodePaths(node: testPrefix("prog"))
        dataplane = try Dataplane(paths: paths, interfaces: .init(resolve: { $0 == "test-web" ? 1 : nil }, attach: false))
        try apply(Self.policy)
    }

    override func tearDownWithError() throws {
        try dataplane?.uninstall()
        dataplane = nil
        removeTestPins(paths)
    }

    @discardableResult
    func apply(_ policy: String) throws -> CompiledState {
        let state = compiler.compile(try ResourceSet.decode(files: [("pods.yaml", Self.pods), ("policy.yaml", policy)]))
        _ = try dataplane.apply(state)
        return state
    }

    /// To the workload (its ingress policy) or from it (its egress policy).
    func toWeb(_ frame: [UInt8]) throws -> UInt32 { try dataplane.toWorkload.testRun(packet: frame, ifindex: 1, ingressIfindex: 1).returnValue }
    func fromWeb(_ frame: [UInt8]) throws -> UInt32 { try dataplane.fromWorkload.testRun(packet: frame, ifindex: 1).returnValue }

    func counters(_ direction: manx_direction) throws -> [UInt64] {
        let perCPU = try dataplane.maps.counters.lookupPerCPU(manx_counters_key(ifindex: 1, direction: direction.rawValue), as: manx_counters.self) ?? []
        return perCPU.reduce(into: [UInt64](repeating: 0, count: Int(MANX_CNT_MAX.rawValue))) { acc, c in
            withUnsafeBytes(of: c.value) { raw in for i in acc.indices { acc[i] += raw.load(fromByteOffset: i * 8, as: UInt64.self) } }
        }
    }

    func testPolicyVerdictsConntrackAndCounters() throws {
        // A new flow from an allowed peer, to the named port.
        XCTAssertEqual(try toWeb(Frame.tcp("10.0.0.2", 40000, "10.0.0.1", 8080, flags: Frame.syn)), TC_ACT_OK)
        // Other peers, ports and protocols are denied.
        XCTAssertEqual(try toWeb(Frame.tcp("10.0.0.3", 40000, "10.0.0.1", 8080, flags: Frame.syn)), TC_ACT_SHOT)
        XCTAssertEqual(try toWeb(Frame.tcp("10.0.0.2", 40001, "10.0.0.1", 8081, flags: Frame.syn)), TC_ACT_SHOT)
        XCTAssertEqual(try toWeb(Frame.udp("10.0.0.2", 40000, "10.0.0.1", 53)), TC_ACT_OK)
        XCTAssertEqual(try toWeb(Frame.udp("10.0.0.2", 40000, "10.0.0.1", 54)), TC_ACT_SHOT)
        XCTAssertEqual(try toWeb(Frame.icmpEcho("10.0.0.2", "10.0.0.1")), TC_ACT_SHOT)
        // Egress is isolated with no rules: web cannot open flows...
        XCTAssertEqual(try fromWeb(Frame.tcp("10.0.0.1", 50000, "10.0.0.2", 80, flags: Frame.syn)), TC_ACT_SHOT)
        // ...but replies to an approved flow pass without a policy lookup.
        XCTAssertEqual(try fromWeb(Frame.tcp("10.0.0.1", 8080, "10.0.0.2", 40000, flags: Frame.syn | Frame.ack)), TC_ACT_OK)
        XCTAssertEqual(try toWeb(Frame.tcp("10.0.0.2", 40000, "10.0.0.1", 8080, flags: Frame.ack)), TC_ACT_OK)
        XCTAssertEqual(try fromWeb(Frame.udp("10.0.0.1", 53, "10.0.0.2", 40000)), TC_ACT_OK)

        let ingress = try counters(MANX_DIR_INGRESS)
        XCTAssertEqual(ingress[Int(MANX_CNT_ALLOW_NEW.rawValue)], 2)
        XCTAssertEqual(ingress[Int(MANX_CNT_ALLOW_CT.rawValue)], 1)
        XCTAssertEqual(ingress[Int(MANX_CNT_DROP_DEFAULT.rawValue)], 4)
        let egress = try counters(MANX_DIR_EGRESS)
        XCTAssertEqual(egress[Int(MANX_CNT_ALLOW_CT.rawValue)], 2)
        XCTAssertEqual(egress[Int(MANX_CNT_DROP_DEFAULT.rawValue)], 1)

        // The entry, in web's own table, records that web received the flow
        // and the rule set and rule that approved it.
        let entries = try XCTUnwrap(dataplane.conntrackTable(ifindex: 1)).entries(as: (manx_ct_key, manx_ct_value).self)
        let tcp = try XCTUnwrap(entries.first { $0.0.proto == 6 && UInt16(bigEndian: $0.0.port_b) == 40000 || UInt16(bigEndian: $0.0.port_a) == 40000 && $0.0.proto == 6 })
        XCTAssertEqual(tcp.1.flags & UInt32(MANX_CT_F_EP_ORIGINATED), 0)
        XCTAssertNotEqual(tcp.1.flags & UInt32(MANX_CT_F_SEEN_REPLY), 0)
        XCTAssertEqual(tcp.1.ruleset, try XCTUnwrap(dataplane.policy(of: XCTUnwrap(dataplane.maps.endpoints.lookup(UInt32(1), as: manx_endpoint.self)))).ingress_ruleset)
        XCTAssertGreaterThanOrEqual(tcp.1.rule_id, ReservedRule.first)
        // ...and the rule that allowed it counts a hit.
        XCTAssertGreaterThanOrEqual(try dataplane.maps.ruleHits.lookupPerCPU(tcp.1.rule_id, as: manx_rule_hits.self)?.reduce(0) { $0 + $1.packets } ?? 0, 1)
    }

    func testPolicyChangeReevaluatesEstablishedFlows() throws {
        XCTAssertEqual(try toWeb(Frame.tcp("10.0.0.2", 41000, "10.0.0.1", 8080, flags: Frame.syn)), TC_ACT_OK)
        XCTAssertEqual(try toWeb(Frame.tcp("10.0.0.2", 41000, "10.0.0.1", 8080, flags: Frame.ack)), TC_ACT_OK)
        // The allow rule goes: the rule set id changes and the next packet of
        // the established flow is checked against the new rule set.
        try apply(Self.policy.replacingOccurrences(of: "app: client", with: "app: nobody"))
        XCTAssertEqual(try toWeb(Frame.tcp("10.0.0.2", 41000, "10.0.0.1", 8080, flags: Frame.ack)), TC_ACT_SHOT)
        // And back: allowed again, without any program reload.
        let before = dataplane.toWorkload.id
        try apply(Self.policy)
        XCTAssertEqual(try toWeb(Frame.tcp("10.0.0.2", 41000, "10.0.0.1", 8080, flags: Frame.ack)), TC_ACT_OK)
        XCTAssertEqual(dataplane.toWorkload.id, before)
    }

    func testClosedTCPFlowsNeedPolicyAgain() throws {
        try apply(Self.policy.replacingOccurrences(of: "policyTypes: [Ingress, Egress]", with: "policyTypes: [Ingress]"))
        XCTAssertEqual(try toWeb(Frame.tcp("10.0.0.2", 42000, "10.0.0.1", 8080, flags: Frame.syn)), TC_ACT_OK)
        XCTAssertEqual(try fromWeb(Frame.tcp("10.0.0.1", 8080, "10.0.0.2", 42000, flags: Frame.rst)), TC_ACT_OK)
        let entry = try XCTUnwrap(dataplane.conntrackTable(ifindex: 1)).entries(as: (manx_ct_key, manx_ct_value).self).first { $0.0.proto == 6 }
        XCTAssertNotEqual((entry?.1.flags ?? 0) & UInt32(MANX_CT_F_RST), 0, "RST marks the flow closed")
    }

    func testNonIPv4AndMalformedFrames() throws {
        XCTAssertEqual(try toWeb(Frame.arp), TC_ACT_OK, "ARP is not policed")
        XCTAssertEqual(try toWeb(Frame.ipv6), TC_ACT_SHOT, "IPv6 fails closed")
        XCTAssertEqual(try toWeb(Array(Frame.tcp("10.0.0.2", 1, "10.0.0.1", 8080, flags: Frame.syn).prefix(40))), TC_ACT_SHOT)
        XCTAssertEqual(try toWeb(Frame.ipv4(src: "10.0.0.2", dst: "10.0.0.1", proto: 6, [UInt8](repeating: 0, count: 20), fragmentOffset: 100)), TC_ACT_SHOT)
        let c = try counters(MANX_DIR_INGRESS)
        XCTAssertEqual(c[Int(MANX_CNT_ALLOW_ARP.rawValue)], 1)
        XCTAssertEqual(c[Int(MANX_CNT_DROP_IPV6.rawValue)], 1)
        XCTAssertEqual(c[Int(MANX_CNT_DROP_MALFORMED.rawValue)], 1)
        XCTAssertEqual(c[Int(MANX_CNT_DROP_FRAGMENT.rawValue)], 1)
        // An interface the daemon does not know: dropped (fail closed).
        let saved = try XCTUnwrap(dataplane.maps.endpoints.lookup(UInt32(1), as: manx_endpoint.self))
        try dataplane.maps.endpoints.delete(UInt32(1))
        XCTAssertEqual(try toWeb(Frame.arp), TC_ACT_SHOT)
        try dataplane.maps.endpoints.update(UInt32(1), saved)
        XCTAssertEqual(try toWeb(Frame.arp), TC_ACT_OK)
    }

    func testPerPacketCostIsReported() throws {
        let established = Frame.tcp("10.0.0.2", 43000, "10.0.0.1", 8080, flags: Frame.ack)
        _ = try toWeb(Frame.tcp("10.0.0.2", 43000, "10.0.0.1", 8080, flags: Frame.syn))
        let ct = try dataplane.toWorkload.testRun(packet: established, repeat: 100_000, ifindex: 1, ingressIfindex: 1)
        let denied = try dataplane.toWorkload.testRun(packet: Frame.tcp("10.0.0.3", 43000, "10.0.0.1", 8080, flags: Frame.syn), repeat: 100_000, ifindex: 1, ingressIfindex: 1)
        print("BPF_PROG_TEST_RUN ns/packet: established \(ct.durationNanoseconds), new flow policy lookup (denied) \(denied.durationNanoseconds)")
        XCTAssertEqual(ct.returnValue, TC_ACT_OK)
        XCTAssertEqual(denied.returnValue, TC_ACT_SHOT)
    }
}
