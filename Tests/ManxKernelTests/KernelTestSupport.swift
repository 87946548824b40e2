import Foundation
import ManxCommand
import ManxBPF
import ManxConformance
import ManxDataplane
import ManxNodeState
import XCTest

/// Kernel tests need root and BPF. They skip (saying why) only when those
/// are missing, and never under CI=true, where a skip would hide a failure.
func requireKernel() throws {
    var reason: String?
    if geteuid() != 0 {
        reason = "not root"
    } else if !FileManager.default.fileExists(atPath: "/sys/fs/bpf") || !FileManager.default.fileExists(atPath: "/sys/kernel/btf/vmlinux") {
        reason = "no BPF filesystem or kernel BTF"
    }
    guard let reason else { return }
    if ProcessInfo.processInfo.environment["CI"] == "true" {
        XCTFail("kernel test cannot run under CI=true: \(reason)")
        throw XCTSkip("failed above")
    }
    print("SKIP kernel test: \(reason)")
    throw XCTSkip("kernel test skipped: \(reason)")
}

func waitUntil(_ what: String, timeout: Double = 20, _ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while !condition() {
        if Date() > deadline { throw NSError(domain: "wait", code: 1, userInfo: [NSLocalizedDescriptionKey: "timed out waiting until \(what)"]) }
        usleep(20_000)
    }
}

/// Removes a test's pin directory, even when its programs never loaded
/// (uninstall does it otherwise); never the machine's own pin root.
func removeTestPins(_ paths: NodePaths) {
    guard paths.pinRoot != NodePaths(node: "").pinRoot else { return }
    try? BPFFS.removeTree(paths.pinRoot)
}

/// A dataplane of its own for one test, with no interfaces (its programs
/// attached nowhere), removed with its pins afterwards.
func withScratchDataplane(_ tag: String, _ body: (Dataplane) throws -> Void) throws {
    try requireKernel()
    let paths = NodePaths(node: testPrefix(tag))
    defer { removeTestPins(paths) }
    let dataplane = try Dataplane(paths: paths, interfaces: .init(resolve: { _ in nil }, attach: false))
    defer { try? dataplane.uninstall() }
    try body(dataplane)
}

/// The lab's node for pods made by manx-cni: forwarding on, and a default
/// route out of a veth (10.98.0.1/24), so each pod's host veth answers ARP
/// for the gateway 169.254.1.1 by proxy ARP.
func createCNINode(_ lab: Lab) throws {
    try lab.createNamespace(lab.node)
    try sh("ip", "netns", "exec", lab.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    try sh("ip", "-n", lab.node, "link", "add", "up0", "type", "veth", "peer", "name", "up1")
    try sh("ip", "-n", lab.node, "link", "set", "up0", "up")
    try sh("ip", "-n", lab.node, "link", "set", "up1", "up")
    try sh("ip", "-n", lab.node, "addr", "add", "10.98.0.1/24", "dev", "up0")
    try sh("ip", "-n", lab.node, "route", "add", "default", "via", "10.98.0.254")
}

/// A prefix unique to one test, for every namespace, interface and pin.
func testPrefix(_ tag: String) -> String { "mxk\(tag)\(getpid() % 10000)" }

@discardableResult
func sh(_ args: String..., allowFailure: Bool = false) throws -> String {
    try sh(args, allowFailure: allowFailure)
}

/// stdout then stderr. The project's one runner (a Foundation `Process`
/// with a pipe waited for ever on a podman whose container kept running).
@discardableResult
func sh(_ args: [String], allowFailure: Bool = false) throws -> String {
    let result = try Command.run(args)
    let out = result.stdout + result.stderr
    if !result.succeeded && !allowFailure {
        throw NSError(domain: "sh", code: Int(result.status),
                      userInfo: [NSLocalizedDescriptionKey: "\(args.joined(separator: " ")): \(out)"])
    }
    return out
}

/// The package's built executables (tools/test builds them before the tests).
func productPath(_ name: String) throws -> String {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    for config in ["debug", "release"] {
        let path = root.appendingPathComponent(".build/\(config)/\(name)").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    throw XCTSkip("\(name) is not built: run `swift build` first")
}

func inNetns<T: Sendable>(_ netns: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
    try NetworkNamespace.run(netns, body)
}

/// Two namespaces joined by a veth pair: "a" (10.201.<n>.1) and "b" (.2).
struct VethPair {
    let a: String
    let b: String
    let ipA: String
    let ipB: String

    init(prefix: String, subnet: Int) throws {
        a = "\(prefix)-a"
        b = "\(prefix)-b"
        ipA = "10.201.\(subnet).1"
        ipB = "10.201.\(subnet).2"
        try sh("ip", "netns", "add", a)
        try sh("ip", "netns", "add", b)
        try sh("ip", "link", "add", "veth0", "netns", a, "type", "veth", "peer", "name", "veth0", "netns", b)
        for (ns, ip) in [(a, ipA), (b, ipB)] {
            try sh("ip", "-n", ns, "addr", "add", "\(ip)/24", "dev", "veth0")
            try sh("ip", "-n", ns, "link", "set", "veth0", "up")
            try sh("ip", "-n", ns, "link", "set", "lo", "up")
        }
    }

    func remove() {
        _ = try? sh("ip", "netns", "del", a, allowFailure: true)
        _ = try? sh("ip", "netns", "del", b, allowFailure: true)
    }

    func ping(from ns: String, to ip: String) -> Bool {
        (try? sh("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", ip)) != nil
    }
}

/// Crafted frames for BPF_PROG_TEST_RUN.
enum Frame {
    static func ip(_ s: String) -> [UInt8] { s.split(separator: ".").map { UInt8($0)! } }
    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }

    static func ethernet(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1] + be16(type) + payload
    }

    /// `options` must be a multiple of 4 bytes long.
    /// `fragmentOffset` is the whole field: 0x2000 (more fragments) | offset in 8-byte units.
    static func ipv4(src: String, dst: String, proto: UInt8, _ l4: [UInt8], fragmentOffset: UInt16 = 0, options: [UInt8] = [],
                     id: UInt16 = 1) -> [UInt8] {
        let hlen = 20 + options.count
        var h: [UInt8] = [0x40 | UInt8(hlen / 4), 0] + be16(UInt16(hlen + l4.count)) + be16(id) + be16(fragmentOffset) + [64, proto, 0, 0]
            + ip(src) + ip(dst) + options
        var sum: UInt32 = 0
        for i in stride(from: 0, to: hlen, by: 2) { sum += UInt32(h[i]) << 8 | UInt32(h[i + 1]) }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        h[10] = UInt8((~sum >> 8) & 0xff)
        h[11] = UInt8(~sum & 0xff)
        return ethernet(0x0800, h + l4)
    }

    static let syn: UInt8 = 0x02, ack: UInt8 = 0x10, fin: UInt8 = 0x01, rst: UInt8 = 0x04

    static func tcp(_ src: String, _ sport: UInt16, _ dst: String, _ dport: UInt16, flags: UInt8) -> [UInt8] {
        let l4 = be16(sport) + be16(dport) + [0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]
        return ipv4(src: src, dst: dst, proto: 6, l4)
    }

    static func udp(_ src: String, _ sport: UInt16, _ dst: String, _ dport: UInt16) -> [UInt8] {
        ipv4(src: src, dst: dst, proto: 17, be16(sport) + be16(dport) + be16(12) + [0, 0, 1, 2, 3, 4])
    }

    static func icmpEcho(_ src: String, _ dst: String, reply: Bool = false, id: UInt16 = 7) -> [UInt8] {
        ipv4(src: src, dst: dst, proto: 1, [reply ? 0 : 8, 0, 0, 0] + be16(id) + [0, 1])
    }

    /// The frame with VLAN tags (TPID, VID 0) inserted after the MAC addresses, outermost first.
    static func tagged(_ frame: [UInt8], tpids: [UInt16]) -> [UInt8] {
        Array(frame[..<12]) + tpids.flatMap { be16($0) + [0, 0] } + Array(frame[12...])
    }

    static func vxlan(src: String, dst: String, inner: [UInt8], vni: UInt32 = 4096, options: [UInt8] = [], fragmentOffset: UInt16 = 0) -> [UInt8] {
        ipv4(src: src, dst: dst, proto: 17,
             be16(50000) + be16(4789) + be16(UInt16(16 + inner.count)) + [0, 0]
                 + [0x08, 0, 0, 0] + be16(UInt16(vni >> 8)) + [UInt8(vni & 0xff), 0] + inner,
             fragmentOffset: fragmentOffset, options: options)
    }

    /// An ICMP query (echo 8/0, timestamp 13/14, information 15/16, ...).
    static func icmpQuery(_ src: String, _ dst: String, type: UInt8, id: UInt16 = 7) -> [UInt8] {
        ipv4(src: src, dst: dst, proto: 1, [type, 0, 0, 0] + be16(id) + [0, 1] + [UInt8](repeating: 0, count: 12))
    }

    /// An ICMP error quoting the IPv4 header and first 8 bytes of `quoted` (a frame).
    static func icmpError(_ src: String, _ dst: String, type: UInt8 = 3, code: UInt8 = 4, quoting quoted: [UInt8]) -> [UInt8] {
        ipv4(src: src, dst: dst, proto: 1, [type, code, 0, 0, 0, 0] + be16(1400) + Array(quoted[14..<(14 + 28)]))
    }

    static let arp: [UInt8] = ethernet(0x0806, [0, 1, 8, 0, 6, 4, 0, 1] + [UInt8](repeating: 0, count: 20))
    static let ipv6: [UInt8] = ethernet(0x86dd, [0x60] + [UInt8](repeating: 0, count: 39))
}

let TC_ACT_OK: UInt32 = 0
let TC_ACT_SHOT: UInt32 = 2
