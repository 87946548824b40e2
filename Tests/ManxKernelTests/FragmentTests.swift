import Foundation
import ManxConformance
import ManxDataplane
import ManxDatastore
import ManxIptables
import ManxModel
import ManxNodeState
import XCTest

/// UDP datagrams larger than the MTU travel in fragments: between pods on
/// one node and across nodes in each encapsulation, under a policy that
/// admits one peer only, with real sockets (`manx-probe probe --udp-size`:
/// the server echoes the whole datagram, so fragments go both ways).
final class FragmentTests: XCTestCase {
    static let policy = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: servers, namespace: net}
    spec:
      podSelector: {matchExpressions: [{key: app, operator: In, values: [b, c]}]}
      ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{protocol: UDP, port: 7000}]}]
    """

    func testLargeDatagramsWithoutEncapsulation() throws { try largeDatagrams("fn", .none) }
    func testLargeDatagramsIPIP() throws { try largeDatagrams("fi", .ipip) }
    func testLargeDatagramsVXLAN() throws { try largeDatagrams("fv", .vxlan) }

    /// a and b on node 1, c and d on node 2; b and c accept UDP 7000 from a only.
    private func largeDatagrams(_ tag: String, _ encapsulation: Encapsulation) throws {
        let pods: [(key: String, node: Int)] = [("net/a", 0), ("net/b", 0), ("net/c", 1), ("net/d", 1)]
        try withCluster(tag, { $0.encapsulation = encapsulation }, pods: pods, policy: Self.policy) { c in
            let probe = try productPath("manx-probe")
            let (a, b, cc, d) = (c.pods["net/a"]!, c.pods["net/b"]!, c.pods["net/c"]!, c.pods["net/d"]!)
            for server in [b, cc] {
                _ = try c.lab.spawn(in: server.netns, [probe, "serve", "--ports", "7000"], log: "/dev/null")
            }
            usleep(300_000)
            func echoes(from pod: Cluster.Pod, to server: Cluster.Pod, size: Int) -> Bool {
                let out = (try? sh("ip", "netns", "exec", pod.netns, probe, "probe", "--timeout-ms", "2000", "--udp-size", "\(size)",
                                   "udp:\(server.ip):7000")) ?? ""
                return out.hasSuffix(" ok\n")
            }
            let capture = try OuterFragmentCapture(c, encapsulation)
            for size in [3000, 16000] {
                XCTAssertTrue(echoes(from: a, to: b, size: size), "\(size) bytes a -> b, same node")
                XCTAssertTrue(echoes(from: a, to: cc, size: size), "\(size) bytes a -> c, across nodes")
                for server in [b, cc] {
                    let arrived = try RawFrames.arrivals(in: server.netns) { _ = echoes(from: d, to: server, size: size) }
                    XCTAssertEqual(arrived, 0, "\(size) bytes from d reach \(server.key): not one fragment may")
                }
            }
            XCTAssertEqual(try capture.finish(), "", "outer fragments on the underlay")
            let json = try sh("nsenter", "--net=/run/netns/\(b.node)", try productPath("bpfctl"),
                              "dump", "--node", b.node, "-o", "json")
            let report = try JSONDecoder().decode(DumpReport.self, from: Data(json.utf8))
            let counters = try XCTUnwrap(report.endpoints.first { $0.interface == b.hostInterface }).counters["ingress"] ?? [:]
            XCTAssertGreaterThan(counters["allow_fragment"] ?? 0, 0)
            XCTAssertGreaterThan(counters["drop_fragment"] ?? 0, 0, "d's later fragments")
        }
    }

    /// The same datagrams in both iptables modes, where the kernel's
    /// conntrack reassembles before policy, as in Calico's iptables mode.
    func testLargeDatagramsOnIptables() throws {
        for backend in IptablesDataplane.Backend.allCases {
            try requireKernel()
            let prefix = testPrefix("fx\(backend.rawValue.prefix(1))")
            let lab = Lab(prefix: prefix)
            let paths = NodePaths(node: prefix)
            let work = try makeScratchDirectory(prefix)
            defer {
                lab.teardown()
                try? FileManager.default.removeItem(atPath: work)
                try? FileManager.default.removeItem(atPath: paths.stateDirectory)
            }
            try lab.createNode()
            var yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: net}\n"
            var netns: [String: String] = [:]
            for (i, name) in ["a", "b", "d"].enumerated() {
                let (ns, host) = try lab.addPod(name, ip: "10.205.0.\(i + 1)")
                netns[name] = ns
                yaml += "---\napiVersion: v1\nkind: Pod\nmetadata: {name: \(name), namespace: net, labels: {app: \(name)}, annotations: {manx.io/interface: \(host)}}\nstatus: {podIP: 10.205.0.\(i + 1)}\n"
            }
            let datastore = DirectoryDatastore(directory: work + "/datastore")
            try FileManager.default.createDirectory(atPath: datastore.directory, withIntermediateDirectories: true)
            try datastore.write("all.yaml", yaml + "---\n" + Self.policy)
            let probe = try productPath("manx-probe")
            _ = try lab.spawn(in: lab.node, [try productPath("manxd"), "--datastore", datastore.directory, "--node", prefix,
                                             "--dataplane", backend == .nft ? "iptables" : "iptables-legacy"],
                              log: work + "/manxd.log", needsPins: true)
            _ = try lab.spawn(in: netns["b"]!, [probe, "serve", "--ports", "7000"], log: "/dev/null")
            let digest = try datastore.snapshot().digest
            try waitUntil("manxd applies the datastore") { (try? NodeMetadata.read(paths))?.appliedDigest == digest }
            for size in [3000, 16000] {
                for (from, allowed) in [("a", true), ("d", false)] {
                    let out = (try? sh("ip", "netns", "exec", netns[from]!, probe, "probe", "--timeout-ms", "2000", "--udp-size", "\(size)",
                                       "udp:10.205.0.2:7000")) ?? ""
                    XCTAssertEqual(out.hasSuffix(" ok\n"), allowed, "\(backend) \(size) bytes from \(from): \(out)")
                }
            }
        }
    }
}

/// tcpdump on the underlay, counting tunnel packets whose outer header is
/// a fragment: Manx's pod MTU leaves room for the tunnel, so there are none.
private final class OuterFragmentCapture {
    let process: Process?
    let output: String

    init(_ c: Cluster, _ encapsulation: Encapsulation) throws {
        let filter: String
        switch encapsulation {
        case .ipip: filter = "ip proto 4 and (ip[6:2] & 0x3fff != 0)"
        case .vxlan: filter = "udp port 4789 and (ip[6:2] & 0x3fff != 0)"
        default: process = nil; output = ""; return
        }
        output = try makeScratchDirectory(c.prefix) + "/capture.txt"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ip", "netns", "exec", c.underlay, "tcpdump", "-l", "-n", "-i", "br0", filter]
        p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        usleep(500_000) // tcpdump attaches
    }

    /// What was captured (empty when nothing was).
    func finish() throws -> String {
        guard let process else { return "" }
        usleep(300_000)
        process.terminate()
        process.waitUntilExit()
        defer { try? FileManager.default.removeItem(atPath: (output as NSString).deletingLastPathComponent) }
        return (try String(contentsOfFile: output, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
