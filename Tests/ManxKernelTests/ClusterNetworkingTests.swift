import Foundation
import ManxConformance
import ManxDataplane
import ManxDatastore
import ManxModel
import ManxNodeState
import XCTest

/// Pod networking across nodes on the real kernel: a simulated cluster
/// (nodes as namespaces on an underlay bridge, manxd on each, pods through
/// manx-cni), real ping/TCP/UDP between pods on different nodes, and a
/// capture on the underlay showing what is on the wire.
final class ClusterNetworkingTests: XCTestCase {
    private func exec(_ netns: String, _ args: String..., allowFailure: Bool = false) throws -> String {
        try sh(["ip", "netns", "exec", netns] + args, allowFailure: allowFailure)
    }

    /// Ping, TCP and UDP from a to b; returns what a tcpdump on the
    /// underlay saw meanwhile (one line per packet).
    private func crossNodeTraffic(_ c: Cluster, from a: String, to b: String, capture filter: String) throws -> String {
        let src = c.pods[a]!, dst = c.pods[b]!
        let scratch = try makeScratchDirectory("\(c.prefix)-traffic")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let captureFile = "\(scratch)/capture.txt"
        let tcpdump = Process()
        tcpdump.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        tcpdump.arguments = ["ip", "netns", "exec", c.underlay, "tcpdump", "-l", "-n", "-i", "br0", "-c", "4", filter]
        _ = FileManager.default.createFile(atPath: captureFile, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: captureFile))
        tcpdump.standardOutput = out
        tcpdump.standardError = FileHandle.nullDevice
        try tcpdump.run()
        defer { if tcpdump.isRunning { tcpdump.terminate() }; tcpdump.waitUntilExit(); try? FileManager.default.removeItem(atPath: captureFile) }
        usleep(500_000) // tcpdump attaches

        XCTAssertTrue(try exec(src.netns, "ping", "-c", "2", "-W", "2", dst.ip).contains(" 0% packet loss"), "ping \(a) -> \(b)")
        let server = try c.lab.spawn(in: dst.netns, [try productPath("manx-probe"), "serve", "--ports", "7000"], log: "\(scratch)/serve.log")
        defer { server.terminate() }
        usleep(300_000)
        let probe = try exec(src.netns, try productPath("manx-probe"), "probe", "--timeout-ms", "2000",
                             "tcp:\(dst.ip):7000", "udp:\(dst.ip):7000")
        XCTAssertEqual(probe.split(separator: "\n").filter { $0.hasSuffix(" ok") }.count, 2, "TCP and UDP \(a) -> \(b): \(probe)")
        for _ in 0..<20 where tcpdump.isRunning { usleep(100_000) }
        return (try? String(contentsOfFile: captureFile, encoding: .utf8)) ?? ""
    }

    func testCrossNodeTrafficWithoutEncapsulation() throws {
        try withCluster("rn", { $0.encapsulation = .none }, pods: [("net/a", 0), ("net/b", 1)]) { c in
            let (a, b) = (c.pods["net/a"]!, c.pods["net/b"]!)
            let seen = try crossNodeTraffic(c, from: "net/a", to: "net/b", capture: "icmp and host \(a.ip) and host \(b.ip)")
            XCTAssertTrue(seen.contains("\(a.ip) > \(b.ip): ICMP echo request"), "pod addresses routed natively on the wire:\n\(seen)")
            XCTAssertGreaterThan(try stat(c, node: 0, "routed"), 0)
        }
    }

    func testCrossNodeTrafficIPIP() throws {
        try withCluster("ri", { $0.encapsulation = .ipip }, pods: [("net/a", 0), ("net/b", 1)]) { c in
            let (a, b) = (c.pods["net/a"]!, c.pods["net/b"]!)
            let seen = try crossNodeTraffic(c, from: "net/a", to: "net/b", capture: "ip proto 4")
            // tcpdump prints the outer header then the inner one.
            XCTAssertTrue(seen.contains("10.99.0.1 > 10.99.0.2: IP \(a.ip) > \(b.ip): ICMP echo request"), "IPIP on the wire:\n\(seen)")
            XCTAssertGreaterThan(try stat(c, node: 0, "encap_ipip"), 0)
            XCTAssertGreaterThan(try stat(c, node: 1, "decap_ipip"), 0)
            XCTAssertEqual(try exec(a.netns, "cat", "/sys/class/net/eth0/mtu").trimmingCharacters(in: .whitespacesAndNewlines), "1480")
        }
    }

    func testCrossNodeTrafficVXLAN() throws {
        try crossNodeVXLAN("rv", device: false)
    }

    /// The measured alternative (manxd --vxlan-device): a collect_md device
    /// builds and strips the headers; the underlay program still checks the
    /// sender before the device's socket sees the packet.
    func testCrossNodeTrafficVXLANDevice() throws {
        try crossNodeVXLAN("rd", device: true)
    }

    private func crossNodeVXLAN(_ tag: String, device: Bool) throws {
        try withCluster(tag, { $0.encapsulation = .vxlan; $0.vxlanDevice = device }, pods: [("net/a", 0), ("net/b", 1)]) { c in
            let (a, b) = (c.pods["net/a"]!, c.pods["net/b"]!)
            let seen = try crossNodeTraffic(c, from: "net/a", to: "net/b", capture: "udp port 4789")
            XCTAssertTrue(seen.contains("10.99.0.1."), "outer source is node 1:\n\(seen)")
            XCTAssertTrue(seen.contains("VXLAN, flags [I] (0x08), vni 4096"), "VXLAN header on the wire:\n\(seen)")
            XCTAssertTrue(seen.contains("\(a.ip) > \(b.ip): ICMP echo request"), "inner packet:\n\(seen)")
            XCTAssertGreaterThan(try stat(c, node: 0, "encap_vxlan"), 0)
            XCTAssertGreaterThan(try stat(c, node: 1, "decap_vxlan"), 0)
            XCTAssertEqual(try exec(a.netns, "cat", "/sys/class/net/eth0/mtu").trimmingCharacters(in: .whitespacesAndNewlines), "1450")
        }
    }

    /// CrossSubnet: nodes 1 and 3 share a subnet (native), node 2 is on the
    /// other one (IPIP through the router between the subnets).
    func testCrossSubnetEncapsulatesOnlyBetweenSubnets() throws {
        try withCluster("rx", nodes: 3, { $0.encapsulation = .ipip; $0.encapMode = .crossSubnet; $0.subnets = 2 },
                        pods: [("net/a", 0), ("net/b", 1), ("net/c", 2)]) { c in
            let (a, b, cc) = (c.pods["net/a"]!, c.pods["net/b"]!, c.pods["net/c"]!)
            let same = try crossNodeTraffic(c, from: "net/a", to: "net/c", capture: "icmp and host \(a.ip) and host \(cc.ip)")
            XCTAssertTrue(same.contains("\(a.ip) > \(cc.ip): ICMP echo request"), "same subnet, native:\n\(same)")
            XCTAssertFalse(same.contains("10.99."), "no outer header between nodes of one subnet:\n\(same)")
            let other = try crossNodeTraffic(c, from: "net/a", to: "net/b", capture: "ip proto 4")
            XCTAssertTrue(other.contains("\(a.ip) > \(b.ip): ICMP echo request"), "across subnets, IPIP:\n\(other)")
        }
    }

    /// Pods get the tunnel MTU; a pod with a wrong (too large) MTU sending
    /// a DF packet that cannot fit the tunnel gets ICMP fragmentation-needed.
    func testMTUAndFragmentationNeeded() throws {
        try withCluster("rm", { $0.encapsulation = .ipip }, pods: [("net/a", 0), ("net/b", 1)]) { c in
            let (a, b) = (c.pods["net/a"]!, c.pods["net/b"]!)
            // The largest packet that fits: 1480 bytes of IP.
            XCTAssertTrue(try exec(a.netns, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1452", b.ip).contains(" 0% packet loss"))
            // Misconfigure the pod (both veth ends, or the veth itself drops
            // the packet), then send 1500 bytes with DF.
            try _ = exec(a.netns, "ip", "link", "set", "eth0", "mtu", "1500")
            try _ = exec(a.node, "ip", "link", "set", a.hostInterface, "mtu", "1500")
            let out = try exec(a.netns, "ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1472", b.ip, allowFailure: true)
            XCTAssertTrue(out.contains("Frag needed and DF set (mtu = 1480)") || out.contains("mtu=1480") || out.contains("mtu = 1480"),
                          "ICMP fragmentation-needed with the tunnel MTU:\n\(out)")
            XCTAssertGreaterThan(try stat(c, node: 0, "frag_needed_sent"), 0)
            // The kernel learned the path MTU: the next send is refused locally.
            let route = try exec(a.netns, "ip", "route", "get", b.ip)
            XCTAssertTrue(route.contains("mtu 1480"), "path MTU cached: \(route)")
        }
    }

    /// natOutgoing: a pod reaches an address outside every pool as its node.
    func testNATOutgoing() throws {
        for nat in [true, false] {
            try withCluster(nat ? "ro" : "rp", nodes: 1, { $0.encapsulation = .ipip; $0.natOutgoing = nat }, pods: [("net/a", 0)]) { c in
                let a = c.pods["net/a"]!
                let world = Cluster.gateway(subnet: 0)
                let ping = try exec(a.netns, "ping", "-c", "2", "-W", "2", world, allowFailure: true)
                if nat {
                    XCTAssertTrue(ping.contains(" 0% packet loss"), "with natOutgoing the reply finds its way back:\n\(ping)")
                    let capture = try captureOnce(c, filter: "icmp", trigger: { _ = try? self.exec(a.netns, "ping", "-c", "1", "-W", "2", world) })
                    XCTAssertTrue(capture.contains("10.99.0.1 > \(world): ICMP echo request"), "SNATed to the node address:\n\(capture)")
                } else {
                    XCTAssertTrue(ping.contains("100% packet loss"), "without natOutgoing the world cannot answer a pod address:\n\(ping)")
                }
            }
        }
    }

    /// A batch this node cannot route (no interface holds its Node address)
    /// is rejected whole, policy included, and applied without a datastore
    /// change once the address appears.
    func testUnroutableBatchIsRejectedWholeThenRetried() throws {
        try withCluster("ru", nodes: 1, { $0.encapsulation = .ipip }, pods: [("net/a", 0)]) { c in
            let node = c.nodeNames[0], paths = NodePaths(node: node)
            let before = try XCTUnwrap(NodeMetadata.read(paths))
            let cluster = try String(contentsOfFile: "\(c.datastore.directory)/cluster.yaml", encoding: .utf8)
            try c.datastore.write("cluster.yaml", cluster.replacingOccurrences(of: "ipv4Address: 10.99.0.1/24", with: "ipv4Address: 10.99.0.77/24"))
            try c.datastore.write("policy.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: net}\nspec: {podSelector: {}}\n")
            let digest = try DirectoryDatastore(directory: c.datastore.directory).snapshot().digest
            func metadata(until done: (NodeMetadata) -> Bool) throws -> NodeMetadata {
                for _ in 0..<100 { if let m = try? NodeMetadata.read(paths), done(m) { return m }; usleep(100_000) }
                return try XCTUnwrap(NodeMetadata.read(paths))
            }
            let rejected = try metadata { $0.rejectedDigest == digest }
            XCTAssertEqual(rejected.error, "no interface in this network namespace has the node address 10.99.0.77")
            XCTAssertEqual(rejected.appliedDigest, before.appliedDigest, "nothing of the batch applied")
            XCTAssertEqual(rejected.endpoints.first?.ingressRuleset, before.endpoints.first?.ingressRuleset, "the policy is not in force")
            try _ = exec(node, "ip", "addr", "add", "10.99.0.77/24", "dev", "eth0")
            let applied = try metadata { $0.appliedDigest == digest }
            XCTAssertEqual(applied.appliedDigest, digest, "retried and applied once the address is there")
            XCTAssertNotEqual(applied.endpoints.first?.ingressRuleset, before.endpoints.first?.ingressRuleset)
        }
    }

    /// The workload programs drop whatever is not the endpoint's: a pod
    /// naming the node's underlay as its interface is rejected, precisely,
    /// and nothing of its batch applies.
    func testUnderlayIsNoWorkloadInterface() throws {
        try withCluster("ry", nodes: 1, { $0.encapsulation = .ipip }, pods: [("net/a", 0)]) { c in
            let node = c.nodeNames[0]
            try c.datastore.write("rogue.yaml", """
            apiVersion: v1
            kind: Pod
            metadata: {name: rogue, namespace: net, annotations: {manx.io/interface: eth0}}
            spec: {nodeName: \(node)}
            status: {podIP: 10.10.0.200}
            """)
            let error = try c.waitApplied()
            XCTAssertEqual(error, "rogue.yaml: Pod net/rogue: metadata.annotations.manx.io/interface: eth0 is this node's underlay interface, not a workload's")
            XCTAssertEqual(try tcFilters(node, "eth0", hook: "egress"), "", "no workload program on the underlay")
        }
    }

    private func tcFilters(_ netns: String, _ interface: String, hook: String) throws -> String {
        try exec(netns, "tc", "filter", "show", "dev", interface, hook).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func captureOnce(_ c: Cluster, filter: String, trigger: () throws -> Void) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ip", "netns", "exec", c.underlay, "timeout", "5", "tcpdump", "-l", "-n", "-i", "br0", "-c", "1", filter]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        try p.run()
        usleep(500_000)
        try trigger()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return out
    }

    /// A node statistic from the pinned per-CPU array (summed).
    private func stat(_ c: Cluster, node: Int, _ name: String) throws -> UInt64 {
        let json = try sh("nsenter", "--net=/run/netns/\(c.nodeNames[node])", try productPath("bpfctl"), "dump",
                          "--node", c.nodeNames[node], "-o", "json")
        guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let stats = object["nodeStatistics"] as? [String: Any], let value = stats[name] as? Int
        else { XCTFail("no node statistic \(name) in bpfctl dump"); return 0 }
        return UInt64(value)
    }
}
