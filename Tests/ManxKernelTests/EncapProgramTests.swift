import ManxBPF
import ManxBPFObjects
import ManxCompiler
import ManxDataplane
import ManxMapLayout
import ManxModel
import ManxNodeState
import XCTest

/// Exact per-packet checks of routing between nodes with BPF_PROG_TEST_RUN:
/// the bytes the programs put on the wire for IPIP and VXLAN, native
/// forwarding, ICMP fragmentation-needed, and decapsulation with its
/// anti-spoofing check.
final class EncapProgramTests: XCTestCase {
    var paths = NodePaths(node: "")
    var dataplane: Dataplane!
    var routing: NodeRouting!
    let TC_ACT_REDIRECT: UInt32 = 7

    static let pods = """
    apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: default, annotations: {manx.io/interface: test-web}}
    status: {podIP: 10.20.0.5}
    """

    override func setUpWithError() throws {
        try requireKernel()
        paths = NodePaths(node: testPrefix("encap"))
        dataplane = try Dataplane(paths: paths, interfaces: .init(resolve: { $0 == "test-web" ? 1 : nil }, attach: false))
        routing = try NodeRouting(paths: paths)
        _ = try dataplane.apply(PolicyCompiler().compile(try ResourceSet.decode(files: [("pods.yaml", Self.pods)])))
        var cfg = manx_node_config()
        cfg.address = IPv4Address("10.99.0.1")!.networkOrder
        cfg.underlay_ifindex = 1
        cfg.underlay_mtu = 1500
        cfg.vxlan_vni = NodeRouting.vxlanVNI
        try routing.config.update(UInt32(0), cfg)
        try route("10.20.1.0/26", via: "10.99.0.2", MANX_ROUTE_F_IPIP)
        try route("10.20.2.0/26", via: "10.99.0.3", MANX_ROUTE_F_VXLAN)
        try route("10.20.3.0/26", via: "10.99.0.4", 0)
    }

    override func tearDownWithError() throws {
        try dataplane?.uninstall()
        dataplane = nil
        routing = nil
        removeTestPins(paths)
    }

    func route(_ cidr: String, via hop: String, _ encap: UInt32, remote: Bool = true) throws {
        let c = try CIDR.parse(cidr).get()
        var k = manx_route_key()
        k.prefixlen = UInt32(c.prefixLength)
        k.addr = c.address.networkOrder
        var v = manx_route_value()
        v.next_hop = IPv4Address(hop)!.networkOrder
        v.flags = (remote ? UInt32(MANX_ROUTE_F_REMOTE) : 0) | encap
        try routing.routes.update(k, v)
    }

    func fromWeb(_ frame: [UInt8]) throws -> BPFProgram.TestRunResult {
        try dataplane.fromWorkload.testRun(packet: frame, ifindex: 1)
    }

    /// The one's-complement sum of a header is 0xffff when its checksum is right.
    func checksumValid(_ bytes: ArraySlice<UInt8>) -> Bool {
        var sum: UInt32 = 0
        var i = bytes.startIndex
        while i < bytes.endIndex {
            sum += UInt32(bytes[i]) << 8 | UInt32(i + 1 < bytes.endIndex ? bytes[i + 1] : 0)
            i += 2
        }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return sum == 0xffff
    }

    func testIPIPEncapsulation() throws {
        let inner = Frame.udp("10.20.0.5", 40000, "10.20.1.7", 53)
        let r = try fromWeb(inner)
        XCTAssertEqual(r.returnValue, TC_ACT_REDIRECT, "sent to the underlay")
        let out = r.packetOut
        XCTAssertEqual(out.count, inner.count + 20)
        XCTAssertEqual(out[14], 0x45)
        XCTAssertEqual(out[23], 4, "outer protocol IPIP")
        XCTAssertEqual(Array(out[26..<30]), Frame.ip("10.99.0.1"))
        XCTAssertEqual(Array(out[30..<34]), Frame.ip("10.99.0.2"))
        XCTAssertEqual(Int(out[16]) << 8 | Int(out[17]), inner.count - 14 + 20, "outer total length")
        XCTAssertTrue(checksumValid(out[14..<34]), "outer header checksum")
        XCTAssertEqual(Array(out[34...]), Array(inner[14...]), "inner packet untouched")
    }

    func testVXLANEncapsulation() throws {
        let inner = Frame.udp("10.20.0.5", 40000, "10.20.2.7", 53)
        let r = try fromWeb(inner)
        XCTAssertEqual(r.returnValue, TC_ACT_REDIRECT)
        let out = r.packetOut
        XCTAssertEqual(out.count, inner.count + 50)
        XCTAssertEqual(out[23], 17, "outer protocol UDP")
        XCTAssertEqual(Array(out[30..<34]), Frame.ip("10.99.0.3"))
        XCTAssertTrue(checksumValid(out[14..<34]))
        XCTAssertEqual(Array(out[36..<38]), Frame.be16(4789), "destination port 4789")
        XCTAssertGreaterThanOrEqual(Int(out[34]) << 8 | Int(out[35]), 32768, "source port from the flow hash")
        XCTAssertEqual(Int(out[38]) << 8 | Int(out[39]), 8 + 8 + inner.count, "UDP length")
        XCTAssertEqual(Array(out[42..<50]), [0x08, 0, 0, 0, 0, 0x10, 0, 0], "VXLAN flags and VNI 4096")
        XCTAssertEqual(Array(out[50..<56]), [0x0e, 0x4d] + Frame.ip("10.99.0.3"), "inner destination: the receiving node's VXLAN MAC")
        XCTAssertEqual(Array(out[56...]), Array(inner[6...]), "the inner frame follows")
    }

    func testNativeForwardingLeavesThePacketAlone() throws {
        let frame = Frame.udp("10.20.0.5", 40000, "10.20.3.7", 53)
        let r = try fromWeb(frame)
        XCTAssertEqual(r.returnValue, TC_ACT_REDIRECT)
        XCTAssertEqual(r.packetOut, frame)
        // Local and outside destinations go to the kernel's routing.
        XCTAssertEqual(try fromWeb(Frame.udp("10.20.0.5", 40000, "192.0.2.1", 53)).returnValue, TC_ACT_OK)
    }

    func testOversizeDFPacketGetsFragmentationNeeded() throws {
        // 1500 bytes of IP with DF: 1520 with IPIP does not fit a 1500 underlay.
        var frame = Frame.ipv4(src: "10.20.0.5", dst: "10.20.1.7", proto: 17,
                               Frame.be16(40000) + Frame.be16(53) + Frame.be16(1480) + [0, 0] + [UInt8](repeating: 7, count: 1472),
                               fragmentOffset: 0x4000)
        XCTAssertEqual(frame.count, 14 + 1500)
        let r = try fromWeb(frame)
        XCTAssertEqual(r.returnValue, TC_ACT_REDIRECT, "sent back to the pod")
        let out = r.packetOut
        XCTAssertEqual(out.count, 14 + 56)
        XCTAssertEqual(Array(out[0..<6]), Array(frame[6..<12]), "to the pod's MAC")
        XCTAssertEqual(out[23], 1, "ICMP")
        XCTAssertEqual(Array(out[26..<30]), Frame.ip("10.99.0.1"), "from the node")
        XCTAssertEqual(Array(out[30..<34]), Frame.ip("10.20.0.5"), "to the sender")
        XCTAssertTrue(checksumValid(out[14..<34]))
        XCTAssertEqual(Array(out[34..<36]), [3, 4], "destination unreachable, fragmentation needed")
        XCTAssertEqual(Array(out[40..<42]), Frame.be16(1480), "next-hop MTU")
        XCTAssertTrue(checksumValid(out[34...]), "ICMP checksum")
        XCTAssertEqual(Array(out[42..<70]), Array(frame[14..<42]), "quotes the offending header and 8 bytes")
        // Without DF the packet cannot be sent whole: dropped, not fragmented.
        frame[20] = 0
        XCTAssertEqual(try fromWeb(frame).returnValue, TC_ACT_SHOT)
        // 1480 bytes fit exactly.
        let fits = Frame.ipv4(src: "10.20.0.5", dst: "10.20.1.7", proto: 17,
                              Frame.be16(40000) + Frame.be16(53) + Frame.be16(1460) + [0, 0] + [UInt8](repeating: 7, count: 1452),
                              fragmentOffset: 0x4000)
        XCTAssertEqual(try fromWeb(fits).returnValue, TC_ACT_REDIRECT)
        XCTAssertEqual(try fromWeb(fits).packetOut.count, fits.count + 20)
    }

    func testDecapsulationChecksTheSendingNode() throws {
        let object = try BPFObject(elf: BPFObjects.elf(.node), name: "manx_node", pinRoot: paths.pinRoot)
        try object.load()
        let fromUnderlay = try object.program(named: "manx_from_underlay")
        let inner = Array(Frame.udp("10.20.1.7", 53, "10.20.0.5", 40000)[14...])
        func ipip(from node: String, to dst: String) -> [UInt8] { Frame.ipv4(src: node, dst: dst, proto: 4, inner) }

        let ok = try fromUnderlay.testRun(packet: ipip(from: "10.99.0.2", to: "10.99.0.1"), ifindex: 1)
        XCTAssertEqual(ok.returnValue, TC_ACT_OK)
        XCTAssertEqual(Array(ok.packetOut[14...]), inner, "outer header stripped")
        XCTAssertEqual(try fromUnderlay.testRun(packet: ipip(from: "10.99.0.9", to: "10.99.0.1"), ifindex: 1).returnValue, TC_ACT_SHOT,
                       "a node that does not host the source cannot inject it")
        // 10.20.0.9 is hosted here (a local /32 with no next hop): nobody may
        // send it through a tunnel, not even from outer source 0.0.0.0.
        try route("10.20.0.9/32", via: "0.0.0.0", 0, remote: false)
        let local = Array(Frame.udp("10.20.0.9", 53, "10.20.0.5", 40000)[14...])
        XCTAssertEqual(try fromUnderlay.testRun(packet: Frame.ipv4(src: "0.0.0.0", dst: "10.99.0.1", proto: 4, local), ifindex: 1).returnValue,
                       TC_ACT_SHOT)
        // An outer fragment is never from a node.
        XCTAssertEqual(try fromUnderlay.testRun(packet: Frame.ipv4(src: "10.99.0.2", dst: "10.99.0.1", proto: 4, inner, fragmentOffset: 0x2000),
                                                ifindex: 1).returnValue, TC_ACT_SHOT)
        let other = ipip(from: "10.99.0.2", to: "10.99.0.7")
        XCTAssertEqual(try fromUnderlay.testRun(packet: other, ifindex: 1).packetOut, other, "not for this node: untouched")

        // VXLAN from node 3, which hosts 10.20.2.0/26.
        let vxInner = Frame.udp("10.20.2.7", 53, "10.20.0.5", 40000)
        let vx = Frame.vxlan(src: "10.99.0.3", dst: "10.99.0.1", inner: vxInner)
        let r = try fromUnderlay.testRun(packet: vx, ifindex: 1)
        XCTAssertEqual(r.returnValue, TC_ACT_OK)
        XCTAssertEqual(Array(r.packetOut[14...]), Array(vxInner[14...]))
        // IP options or a first fragment would skip the sender check and,
        // with a VXLAN device, reach its socket: dropped in every mode.
        let nop: [UInt8] = [1, 1, 1, 0]
        for mode in ["BPF", "device"] {
            var cfg = try XCTUnwrap(routing.config.lookup(UInt32(0), as: manx_node_config.self))
            cfg.vxlan_ifindex = mode == "device" ? 1 : 0
            try routing.config.update(UInt32(0), cfg)
            for forged in [Frame.vxlan(src: "10.99.0.3", dst: "10.99.0.1", inner: vxInner, options: nop),
                           Frame.vxlan(src: "10.99.0.3", dst: "10.99.0.1", inner: vxInner, fragmentOffset: 0x2000),
                           Frame.vxlan(src: "10.99.0.9", dst: "10.99.0.1", inner: vxInner, options: nop)] {
                XCTAssertEqual(try fromUnderlay.testRun(packet: forged, ifindex: 1).returnValue, TC_ACT_SHOT, "VXLAN \(mode) mode")
            }
            // Other UDP with options is not the tunnel's business.
            let dns = Frame.ipv4(src: "10.99.0.9", dst: "10.99.0.1", proto: 17, Frame.be16(53) + Frame.be16(5353) + Frame.be16(12) + [1, 2, 3, 4], options: nop)
            XCTAssertEqual(try fromUnderlay.testRun(packet: dns, ifindex: 1).returnValue, TC_ACT_OK)
        }
    }
}
