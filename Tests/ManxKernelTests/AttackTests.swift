import Foundation
import ManxConformance
import ManxDataplane
import ManxDatastore
import ManxIptables
import ManxModel
import ManxNodeState
import XCTest

/// The attack suite, on a real 2-node cluster in each encapsulation mode:
/// a pod with CAP_NET_RAW writes raw frames on its own eth0 (AF_PACKET,
/// `manx-probe inject`) and the victims' kernels count what arrives
/// (`Ip: InReceives` in their namespace). Each attack has a control that
/// shows the same frames arrive when they are legitimate.
///
/// Pods: on node 1 the attacker `a`, the friend `f`, the victim `v1` and
/// the jailed `j`; on node 2 the victim `v2`. Victims accept ingress only
/// from `f` (their egress is open); `j` may send nothing.
final class AttackTests: XCTestCase {
    static let policy = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: victims, namespace: net}
    spec:
      podSelector: {matchExpressions: [{key: app, operator: In, values: [v1, v2]}]}
      policyTypes: [Ingress]
      ingress: [{from: [{podSelector: {matchLabels: {app: f}}}]}]
    ---
    apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: timestamps-from-a, namespace: net}
    spec:
      selector: app in {'v1', 'v2'}
      types: [Ingress]
      ingress: [{action: Allow, protocol: ICMP, icmp: {type: 13}, source: {selector: app == 'a'}}]
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: jail, namespace: net}
    spec:
      podSelector: {matchLabels: {app: j}}
      policyTypes: [Egress]
    """

    static let pods: [(key: String, node: Int)] = [("net/a", 0), ("net/f", 0), ("net/v1", 0), ("net/j", 0), ("net/v2", 1)]

    func testAttacksWithoutEncapsulation() throws { try attackSuite("an", .none) }
    func testAttacksIPIP() throws { try attackSuite("ai", .ipip) }
    func testAttacksVXLAN() throws { try attackSuite("av", .vxlan) }

    private func attackSuite(_ tag: String, _ encapsulation: Encapsulation) throws {
        try withCluster(tag, { $0.encapsulation = encapsulation; $0.natOutgoing = true }, pods: Self.pods, policy: Self.policy) { c in
            try forgedSource(c)
            try conntrackPoisoning(c)
            try vlanTags(c)
            try podBuiltTunnels(c)
            try icmpSmuggling(c)
            try reusedAddress(c) // replaces v1 with v3
            try conntrackFlood(c, victim: "net/v3") // last: it fills the tables of a and f
        }
    }

    /// Kubernetes' node rule on real nodes: node 1 reaches its isolated pod
    /// `p`, whose replies pass its isolated egress. Node 2 does not; nor does
    /// an underlay host writing node 1's address, node 2 tunnelling a packet
    /// with node 1's address inside, or a pod writing it. `p` cannot reach
    /// its node: that stays under its egress policy.
    func testNodeRule() throws {
        let policy = """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: isolate-p, namespace: net}
        spec: {podSelector: {matchLabels: {app: p}}, policyTypes: [Ingress, Egress]}
        """
        try withCluster("nr", { $0.encapsulation = .ipip }, pods: [("net/p", 0), ("net/q", 0)], policy: policy) { c in
            let (p, q) = (c.pods["net/p"]!, c.pods["net/q"]!)
            let (node1, node2) = (c.nodeNames[0], c.nodeNames[1])
            let (address1, address2) = (c.nodeAddress(1).address, c.nodeAddress(2).address)
            let probe = try productPath("manx-probe")
            let server = try c.lab.spawn(in: p.netns, [probe, "serve", "--ports", "8080"], log: "/dev/null")
            let nodeServer = try c.lab.spawn(in: node1, [probe, "serve", "--ports", "8081"], log: "/dev/null")
            defer { server.terminate(); nodeServer.terminate() }
            usleep(300_000)
            func connects(from netns: String, _ target: String) -> Bool {
                ((try? sh("ip", "netns", "exec", netns, probe, "probe", "--timeout-ms", "1000", target)) ?? "").hasSuffix(" ok\n")
            }
            XCTAssertTrue(connects(from: node1, "tcp:\(p.ip):8080"), "node 1 reaches its pod")
            XCTAssertTrue(connects(from: node1, "udp:\(p.ip):8080"), "and gets UDP replies through p's isolated egress")
            XCTAssertFalse(connects(from: node2, "tcp:\(p.ip):8080"), "another node gets p's policy")
            XCTAssertFalse(connects(from: q.netns, "tcp:\(p.ip):8080"), "so does a pod")
            XCTAssertFalse(connects(from: p.netns, "tcp:\(address1):8081"), "p to its node stays under p's egress policy")

            let syn = Frame.tcp(address1, 40000, p.ip, 8080, flags: Frame.syn)
            let node1MAC = try mac(of: "eth0", in: node1)
            XCTAssertEqual(try arrivals(at: p) { try inject(in: c.underlay, on: "br0", to: node1MAC, [syn], count: 10) }, 0,
                           "an underlay host writing node 1's address")
            let tunnelled = Frame.ipv4(src: address2, dst: address1, proto: 4, Array(syn[14...]))
            XCTAssertEqual(try arrivals(at: p) { try inject(in: node2, on: "eth0", to: node1MAC, [tunnelled], count: 10) }, 0,
                           "node 2 tunnelling node 1's address")
            XCTAssertEqual(try arrivals(at: p, whileSending: syn, from: q, count: 10), 0, "a pod writing node 1's address")
        }
    }

    /// An ingress-isolated pod still gets fragmentation-needed for its own
    /// flows, or path MTU discovery black-holes: node 2 forwards into b's
    /// veth, whose MTU is lowered to 1400 (a smaller hop on the path), and a
    /// large TCP transfer from a to b completes.
    func testPathMTUDiscoveryWithIsolatedIngress() throws {
        let policy = """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: isolate-a, namespace: net}
        spec: {podSelector: {matchLabels: {app: a}}, policyTypes: [Ingress]}
        """
        try withCluster("pm", { $0.encapsulation = .none }, pods: [("net/a", 0), ("net/b", 1)], policy: policy) { c in
            let (a, b) = (c.pods["net/a"]!, c.pods["net/b"]!)
            try sh("ip", "-n", b.node, "link", "set", b.hostInterface, "mtu", "1400")
            // Node 2's own errors to a go to node 1 (pods have no kernel routes across nodes).
            try sh("ip", "-n", b.node, "route", "add", "\(a.ip)/32", "via", c.nodeAddress(1).address)
            let server = try c.lab.spawn(in: b.netns, ["iperf3", "-s", "-1"], log: "/dev/null")
            defer { server.terminate() }
            usleep(500_000)
            let out = try sh(["ip", "netns", "exec", a.netns, "timeout", "30", "iperf3", "-c", b.ip, "-n", "16M", "--connect-timeout", "3000"],
                             allowFailure: true)
            XCTAssertTrue(out.contains("receiver"), "16 MB from a to b through a 1400-byte hop:\n\(out)")
            XCTAssertGreaterThan(try counter(c, a, "ingress", "allow_related"), 0, "fragmentation-needed reached a")
            XCTAssertTrue(try sh("ip", "netns", "exec", a.netns, "ip", "route", "get", b.ip).contains("mtu 1400"), "a learned the path MTU")
        }
    }

    // MARK: Attacks

    /// `a` claims to be `f`, whom both victims trust.
    private func forgedSource(_ c: Cluster) throws {
        let (a, f, v1, v2) = (c.pods["net/a"]!, c.pods["net/f"]!, c.pods["net/v1"]!, c.pods["net/v2"]!)
        for victim in [v1, v2] {
            let syn = Frame.tcp(f.ip, 40000, victim.ip, 7000, flags: Frame.syn)
            XCTAssertGreaterThanOrEqual(try arrivals(at: victim, whileSending: syn, from: f, count: 20), 20, "control: \(f.key)'s own SYNs reach \(victim.key)")
            XCTAssertEqual(try arrivals(at: victim, whileSending: syn, from: a, count: 20), 0, "SYNs forged by \(a.key) as \(f.key) reach \(victim.key)")
        }
        XCTAssertGreaterThanOrEqual(try counter(c, a, "egress", "drop_spoofed_source"), 40)
    }

    /// One forged packet makes `v1` look like the originator of a flow from
    /// its port 22 to `a`:443; `a` then connects from 443 to `v1`:22.
    private func conntrackPoisoning(_ c: Cluster) throws {
        let (a, f, v) = (c.pods["net/a"]!, c.pods["net/f"]!, c.pods["net/v1"]!)
        let server = try c.lab.spawn(in: v.netns, [try productPath("manx-probe"), "serve", "--ports", "22"], log: "/dev/null")
        defer { server.terminate() }
        usleep(300_000)
        XCTAssertTrue(try connect(from: f, to: v, port: 22), "control: \(f.key) connects to \(v.key):22")
        XCTAssertFalse(try connect(from: a, to: v, port: 22), "\(a.key) is not allowed into \(v.key)")
        try inject(from: a, [Frame.tcp(v.ip, 22, a.ip, 443, flags: Frame.ack)], count: 1)
        XCTAssertFalse(try connect(from: a, to: v, port: 22, sourcePort: 443), "after the forged packet, \(a.key):443 connects to \(v.key):22")
    }

    /// `j` may send nothing; VLAN tags (one goes into skb metadata before
    /// tc, a second stays in the frame) must not smuggle its SYNs out.
    private func vlanTags(_ c: Cluster) throws {
        let (j, f) = (c.pods["net/j"]!, c.pods["net/f"]!)
        let syn = Frame.tcp(j.ip, 40000, f.ip, 7000, flags: Frame.syn)
        XCTAssertEqual(try arrivals(at: f, whileSending: syn, from: j, count: 10), 0, "\(j.key) is jailed")
        for tpids: [UInt16] in [[0x8100], [0x8100, 0x8100], [0x88a8, 0x8100]] {
            XCTAssertEqual(try arrivals(at: f, whileSending: Frame.tagged(syn, tpids: tpids), from: j, count: 10), 0, "SYNs tagged \(tpids) escape \(j.key)")
        }
        XCTAssertEqual(try counter(c, j, "egress", "drop_vlan"), 30)
    }

    /// `a` builds IPIP and VXLAN to node 2 itself (leaving masqueraded to
    /// node 1's address, which node 2 trusts), with an inner SYN from `f`.
    private func podBuiltTunnels(_ c: Cluster) throws {
        let (a, f, v2) = (c.pods["net/a"]!, c.pods["net/f"]!, c.pods["net/v2"]!)
        let node2 = c.nodeAddress(2).address
        let inner = Frame.tcp(f.ip, 40000, v2.ip, 7000, flags: Frame.syn)
        let ipip = Frame.ipv4(src: a.ip, dst: node2, proto: 4, Array(inner[14...]))
        let vxlan = Frame.vxlan(src: a.ip, dst: node2, inner: inner)
        XCTAssertEqual(try arrivals(at: v2, whileSending: ipip, from: a, count: 10), 0, "pod-built IPIP reaches \(v2.key)")
        XCTAssertEqual(try arrivals(at: v2, whileSending: vxlan, from: a, count: 10), 0, "pod-built VXLAN reaches \(v2.key)")
        XCTAssertEqual(try counter(c, a, "egress", "drop_tunnel"), 20)
    }

    /// The victims accept ICMP timestamp requests (13) from `a`, nothing
    /// else: information requests (15) sent after allowed timestamps, on
    /// the same identifier, must not ride on them.
    private func icmpSmuggling(_ c: Cluster) throws {
        let a = c.pods["net/a"]!
        for victim in [c.pods["net/v1"]!, c.pods["net/v2"]!] {
            XCTAssertGreaterThanOrEqual(try arrivals(at: victim, whileSending: Frame.icmpQuery(a.ip, victim.ip, type: 13), from: a, count: 5), 5,
                           "control: timestamp requests to \(victim.key)")
            XCTAssertEqual(try arrivals(at: victim, whileSending: Frame.icmpQuery(a.ip, victim.ip, type: 15), from: a, count: 5), 0,
                           "information requests after timestamps reach \(victim.key)")
        }
    }

    /// The victim (isolated) opened a UDP flow to `a` and went idle; `a`
    /// may push on it. Meanwhile `f` opens 800,000 flows to `a`: more than
    /// any table holds. The push still arrives.
    private func conntrackFlood(_ c: Cluster, victim: String) throws {
        let (a, f, v) = (c.pods["net/a"]!, c.pods["net/f"]!, c.pods[victim]!)
        let push = Frame.udp(a.ip, 9000, v.ip, 6000)
        try inject(from: v, [Frame.udp(v.ip, 6000, a.ip, 9000)], count: 1)
        XCTAssertGreaterThanOrEqual(try arrivals(at: v, whileSending: push, from: a, count: 10), 10, "control: \(a.key) pushes on \(v.key)'s flow")
        let flood = try sh("ip", "netns", "exec", f.netns, try productPath("manx-probe"), "flood", "--flows", "800000", a.ip)
        print("conntrack flood: \(flood.trimmingCharacters(in: .whitespacesAndNewlines))")
        XCTAssertGreaterThanOrEqual(try arrivals(at: v, whileSending: push, from: a, count: 10), 10, "after \(f.key)'s flood, \(a.key)'s push on \(v.key)'s idle flow")
        XCTAssertGreaterThan(try counter(c, f, "egress", "drop_conntrack_full"), 0, "the flooder hit its own budget")
    }

    /// `v1` opened a UDP flow to `a`, then was deleted; `v3`, isolated
    /// like it, gets its address. `a`'s "replies" on v1's flow are new
    /// flows to v3, which its policy refuses.
    private func reusedAddress(_ c: Cluster) throws {
        let (a, v1) = (c.pods["net/a"]!, c.pods["net/v1"]!)
        let reply = Frame.udp(a.ip, 9100, v1.ip, 6100)
        try inject(from: v1, [Frame.udp(v1.ip, 6100, a.ip, 9100)], count: 1)
        XCTAssertGreaterThanOrEqual(try arrivals(at: v1, whileSending: reply, from: a, count: 10), 10, "control: \(a.key) replies to \(v1.key)")
        try c.deletePod("net/v1")
        try c.datastore.write("v3.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: v3, namespace: net, labels: {app: v1}}\n")
        let v3 = try c.addPod("net/v3", node: v1.node)
        XCTAssertEqual(v3.ip, v1.ip, "IPAM hands the freed address out again")
        XCTAssertEqual(try arrivals(at: v3, whileSending: reply, from: a, count: 10), 0, "\(v3.key) inherits \(v1.key)'s flow")
    }

    // MARK: Tools

    /// Sends the frame `count` times from the pod's eth0 (MACs filled in:
    /// the pod's, and its gateway's, the host side of its veth).
    private func inject(from pod: Cluster.Pod, _ frames: [[UInt8]], count: Int) throws {
        try RawFrames.inject(in: pod.netns, on: "eth0", to: try RawFrames.mac(of: pod.hostInterface, in: pod.node), frames, count: count)
    }

    private func inject(in netns: String, on interface: String, to destination: [UInt8], _ frames: [[UInt8]], count: Int) throws {
        try RawFrames.inject(in: netns, on: interface, to: destination, frames, count: count)
    }

    private func mac(of interface: String, in netns: String) throws -> [UInt8] { try RawFrames.mac(of: interface, in: netns) }

    /// How many IPv4 packets the victim's kernel received while the frame was sent.
    private func arrivals(at victim: Cluster.Pod, whileSending frame: [UInt8], from pod: Cluster.Pod, count: Int) throws -> Int {
        try arrivals(at: victim) { try inject(from: pod, [frame], count: count) }
    }

    private func arrivals(at victim: Cluster.Pod, while sending: () throws -> Void) throws -> Int {
        try RawFrames.arrivals(in: victim.netns, while: sending)
    }

    private func connect(from pod: Cluster.Pod, to server: Cluster.Pod, port: Int, sourcePort: Int? = nil) throws -> Bool {
        let source = sourcePort.map { ["-p", "\($0)"] } ?? []
        return (try? sh(["ip", "netns", "exec", pod.netns, "nc", "-z", "-w", "2"] + source + [server.ip, "\(port)"])) != nil
    }

    /// An endpoint counter from `bpfctl dump -o json` on the pod's node.
    private func counter(_ c: Cluster, _ pod: Cluster.Pod, _ direction: String, _ name: String) throws -> UInt64 {
        let json = try sh("nsenter", "--net=/run/netns/\(pod.node)", try productPath("bpfctl"), "dump", "--node", pod.node, "-o", "json")
        let report = try JSONDecoder().decode(DumpReport.self, from: Data(json.utf8))
        let endpoint = try XCTUnwrap(report.endpoints.first { $0.interface == pod.hostInterface }, "\(pod.key) in bpfctl dump")
        return endpoint.counters[direction]?[name] ?? 0
    }
}

/// The same attacks against the iptables dataplane (nft and legacy), on one
/// simulated node: what iptables can guarantee, it does, as Calico's
/// iptables mode does. VLAN tags need nothing there: the kernel strips them
/// before the IP layer where iptables polices.
final class IptablesAttackTests: XCTestCase {
    static let resources = """
    apiVersion: v1
    kind: Namespace
    metadata: {name: net}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: a, namespace: net, labels: {app: a}, annotations: {manx.io/interface: IF_A}}
    status: {podIP: 10.204.0.1}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: f, namespace: net, labels: {app: f}, annotations: {manx.io/interface: IF_F}}
    status: {podIP: 10.204.0.2}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: v, namespace: net, labels: {app: v}, annotations: {manx.io/interface: IF_V}}
    status: {podIP: 10.204.0.3}
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: v, namespace: net}
    spec:
      podSelector: {matchLabels: {app: v}}
      policyTypes: [Ingress, Egress]
      ingress: [{from: [{podSelector: {matchLabels: {app: f}}}]}]
    """

    func testAttacksOnIptables() throws { try attacks(.nft) }
    func testAttacksOnIptablesLegacy() throws { try attacks(.legacy) }

    private func attacks(_ backend: IptablesDataplane.Backend) throws {
        try requireKernel()
        let prefix = testPrefix("ia\(backend.rawValue.prefix(1))")
        let lab = Lab(prefix: prefix)
        let paths = NodePaths(node: prefix)
        let work = try makeScratchDirectory(prefix)
        defer {
            lab.teardown()
            try? FileManager.default.removeItem(atPath: work)
            try? FileManager.default.removeItem(atPath: paths.stateDirectory)
        }
        try lab.createNode()
        var pods: [String: (netns: String, host: String, ip: String)] = [:]
        var yaml = Self.resources
        for (name, ip) in [("a", "10.204.0.1"), ("f", "10.204.0.2"), ("v", "10.204.0.3")] {
            let (netns, host) = try lab.addPod(name, ip: ip)
            pods[name] = (netns, host, ip)
            yaml = yaml.replacingOccurrences(of: "IF_\(name.uppercased())", with: host)
        }
        let datastore = DirectoryDatastore(directory: work + "/datastore")
        try FileManager.default.createDirectory(atPath: datastore.directory, withIntermediateDirectories: true)
        try datastore.write("all.yaml", yaml)
        let probe = try productPath("manx-probe")
        _ = try lab.spawn(in: lab.node, [try productPath("manxd"), "--datastore", datastore.directory, "--node", prefix,
                                         "--dataplane", backend == .nft ? "iptables" : "iptables-legacy"],
                          log: work + "/manxd.log", needsPins: true)
        _ = try lab.spawn(in: lab.node, [probe, "serve", "--ports", "8081"], log: "/dev/null")
        _ = try lab.spawn(in: pods["v"]!.netns, [probe, "serve", "--ports", "80"], log: "/dev/null")
        let digest = try datastore.snapshot().digest
        try waitUntil("manxd applies the datastore") { (try? NodeMetadata.read(paths))?.appliedDigest == digest }

        func send(_ from: String, _ frames: [[UInt8]]) throws {
            let pod = pods[from]!
            try RawFrames.inject(in: pod.netns, on: "eth0", to: try RawFrames.mac(of: pod.host, in: lab.node), frames, count: 10)
        }
        func arrivals(at to: String, _ body: () throws -> Void) throws -> Int { try RawFrames.arrivals(in: pods[to]!.netns, while: body) }
        func connects(from netns: String, _ target: String) -> Bool {
            ((try? sh("ip", "netns", "exec", netns, probe, "probe", "--timeout-ms", "1000", target)) ?? "").hasSuffix(" ok\n")
        }
        let (a, f, v) = (pods["a"]!, pods["f"]!, pods["v"]!)

        let syn = Frame.tcp(f.ip, 40000, v.ip, 80, flags: Frame.syn)
        XCTAssertGreaterThanOrEqual(try arrivals(at: "v") { try send("f", [syn]) }, 10, "control: f's own SYNs")
        XCTAssertEqual(try arrivals(at: "v") { try send("a", [syn]) }, 0, "SYNs forged by a as f")
        let inner = Frame.tcp(a.ip, 40000, f.ip, 80, flags: Frame.syn)
        XCTAssertGreaterThanOrEqual(try arrivals(at: "f") { try send("a", [inner]) }, 10, "control: a's plain SYNs")
        XCTAssertEqual(try arrivals(at: "f") { try send("a", [Frame.ipv4(src: a.ip, dst: f.ip, proto: 4, Array(inner[14...]))]) }, 0, "IPIP from a")
        XCTAssertEqual(try arrivals(at: "f") { try send("a", [Frame.vxlan(src: a.ip, dst: f.ip, inner: inner)]) }, 0, "VXLAN from a")

        XCTAssertTrue(connects(from: a.netns, "tcp:\(Lab.gateway):8081"), "control: a reaches its node")
        XCTAssertFalse(connects(from: v.netns, "tcp:\(Lab.gateway):8081"), "v's isolated egress covers its node")
        XCTAssertTrue(connects(from: lab.node, "tcp:\(v.ip):80"), "the node reaches its isolated pod")
        XCTAssertFalse(connects(from: a.netns, "tcp:\(v.ip):80"), "a does not")
    }
}
