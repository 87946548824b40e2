@testable import ManxModel
import ManxSelectors
import XCTest

/// IPPool, Node, FelixConfiguration, IPAMBlock and WorkloadEndpoint:
/// decoding, defaults, cross-resource checks, and how endpoints give pods
/// their address.
final class NetworkingModelTests: XCTestCase {
    static func pool(_ spec: String, name: String = "pool-a") -> String {
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: \(name)}\nspec: \(spec)\n"
    }

    static func node(_ spec: String, name: String = "n1", labels: String = "{}") -> String {
        "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: \(name), labels: \(labels)}\nspec: \(spec)\n"
    }

    static func felix(_ spec: String, name: String = "default") -> String {
        "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: \(name)}\nspec: \(spec)\n"
    }

    static func block(_ spec: String, name: String = "10-10-0-0-26") -> String {
        "apiVersion: manx.io/v1\nkind: IPAMBlock\nmetadata: {name: \(name)}\nspec: \(spec)\n"
    }

    static func wep(_ spec: String, name: String = "n1-k8s-a-eth0", namespace: String = "x") -> String {
        "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: \(name), namespace: \(namespace)}\nspec: \(spec)\n"
    }

    static let wepSpec = "{node: n1, orchestrator: k8s, pod: a, endpoint: eth0, containerID: 0123abcd, interfaceName: mx0a1b2c3d4e5, ipNetworks: [10.10.0.1/32]"

    static func decode(_ docs: String...) throws -> ResourceSet {
        try ResourceSet.decode(files: [("net.yaml", docs.joined(separator: "---\n"))])
    }

    // MARK: Decoding and defaults

    func testIPPoolDefaults() throws {
        let set = try Self.decode(Self.pool("{cidr: 10.10.0.0/16}"))
        let p = try XCTUnwrap(set.ipPools["pool-a"])
        XCTAssertEqual(p.cidr.description, "10.10.0.0/16")
        XCTAssertEqual(p.blockSize, 26)
        XCTAssertEqual(p.ipipMode, .never)
        XCTAssertEqual(p.vxlanMode, .never)
        XCTAssertFalse(p.natOutgoing)
        XCTAssertFalse(p.disabled)
        XCTAssertEqual(p.nodeSelector, .all)
        XCTAssertEqual(p.ref, ResourceRef(kind: "IPPool", namespace: nil, name: "pool-a", file: "net.yaml"))
    }

    func testIPPoolEveryField() throws {
        let set = try Self.decode(Self.pool("""
        {cidr: 10.20.0.0/16, blockSize: 28, ipipMode: CrossSubnet, vxlanMode: Never, natOutgoing: true, disabled: true,
         nodeSelector: "zone == 'a'", allowedUses: [Workload, Tunnel], disableBGPExport: false}
        """))
        let p = try XCTUnwrap(set.ipPools["pool-a"])
        XCTAssertEqual(p.blockSize, 28)
        XCTAssertEqual(p.ipipMode, .crossSubnet)
        XCTAssertTrue(p.encapsulation == (.ipip, .crossSubnet))
        XCTAssertTrue(p.natOutgoing)
        XCTAssertTrue(p.disabled)
        XCTAssertTrue(p.nodeSelector.matches(["zone": "a"]))
        XCTAssertFalse(p.nodeSelector.matches(["zone": "b"]))
        let v = try Self.decode(Self.pool("{cidr: 10.20.0.0/16, vxlanMode: Always}")).ipPools["pool-a"]!
        XCTAssertTrue(v.encapsulation == (.vxlan, .always))
    }

    func testNode() throws {
        let set = try Self.decode(Self.node("{bgp: {ipv4Address: 10.99.0.1/24, asNumber: 64512}, orchRefs: [{nodeName: n1}], addresses: [{address: 10.99.0.1}]}",
                                            labels: "{zone: a}"))
        let n = try XCTUnwrap(set.nodes["n1"])
        XCTAssertEqual(n.address.description, "10.99.0.1")
        XCTAssertEqual(n.subnet.description, "10.99.0.0/24")
        XCTAssertEqual(n.labels, ["zone": "a"])
    }

    func testFelixConfiguration() throws {
        let set = try Self.decode(Self.felix("{ipipMTU: 1480, vxlanMTU: 1450, logSeverityScreen: Info, bpfEnabled: true}"),
                                  Self.felix("{vxlanMTU: 1400}", name: "node.n1"), Self.felix("{}", name: "node.n2"))
        XCTAssertEqual(set.felixConfigurations["default"]?.ipipMTU, 1480)
        XCTAssertEqual(set.felixConfigurations["default"]?.vxlanMTU, 1450)
        XCTAssertNil(set.felixConfigurations["node.n1"]?.ipipMTU)
        XCTAssertEqual(set.felixConfigurations["node.n1"]?.vxlanMTU, 1400)
        XCTAssertNotNil(set.felixConfigurations["node.n2"])
    }

    func testIPAMBlockAndRoundTrip() throws {
        let set = try Self.decode(Self.block("""
        {cidr: 10.10.0.0/26, pool: pool-a, node: n1, allocations: [
          {address: 10.10.0.2, handle: "0123", workload: x/b, node: n2},
          {address: 10.10.0.1, handle: abc, workload: x/a, node: n1}]}
        """))
        let cidr = try CIDR.parse("10.10.0.0/26").get()
        let b = try XCTUnwrap(set.ipamBlocks[cidr])
        XCTAssertEqual(b.pool, "pool-a")
        XCTAssertEqual(b.node, "n1")
        XCTAssertEqual(b.allocations.map(\.address.description), ["10.10.0.1", "10.10.0.2"])
        XCTAssertEqual(b.allocations[1].handle, "0123")
        XCTAssertEqual(b.allocations[1].node, "n2")
        // The rendered document decodes to the same block.
        var again = try ResourceSet.decode(files: [("net.yaml", b.yaml)]).ipamBlocks[cidr]
        XCTAssertEqual(again, b)
        // Awkward strings survive.
        var odd = b
        odd.allocations[0].workload = "a: \"b\"\\ null"
        odd.allocations[1].handle = "true"
        again = try ResourceSet.decode(files: [("net.yaml", odd.yaml)]).ipamBlocks[cidr]
        XCTAssertEqual(again, odd)
        let empty = IPAMBlock(cidr: cidr, pool: "p", node: "n9", ref: b.ref)
        XCTAssertEqual(try ResourceSet.decode(files: [("net.yaml", empty.yaml)]).ipamBlocks[cidr], empty)
    }

    func testWorkloadEndpointGivesItsPodAddressNodeAndInterface() throws {
        let pod = """
        apiVersion: v1
        kind: Pod
        metadata: {name: a, namespace: x, labels: {app: web}}
        spec: {serviceAccountName: sa1, containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}

        """
        let set = try Self.decode(pod, Self.wep(Self.wepSpec + ", mac: \"AA:bb:cc:dd:ee:ff\"}"))
        let w = try XCTUnwrap(set.workloadEndpoints["x/n1-k8s-a-eth0"])
        XCTAssertEqual(w.podKey, "x/a")
        XCTAssertEqual(w.containerID, "0123abcd")
        XCTAssertEqual(w.interfaceName, "mx0a1b2c3d4e5")
        XCTAssertEqual(w.endpoint, "eth0")
        XCTAssertEqual(w.mac, "aa:bb:cc:dd:ee:ff")
        let p = try XCTUnwrap(set.pods["x/a"])
        XCTAssertEqual(p.ip?.description, "10.10.0.1")
        XCTAssertEqual(p.nodeName, "n1")
        XCTAssertEqual(p.interface, "mx0a1b2c3d4e5")
        XCTAssertEqual(p.labels, ["app": "web"])
        XCTAssertEqual(p.serviceAccount, "sa1")
        XCTAssertEqual(p.ports.map(\.name), ["http"])
        XCTAssertEqual(p.ref.kind, "Pod")
        // The rendered endpoint decodes to the same value.
        XCTAssertEqual(try ResourceSet.decode(files: [("net.yaml", w.yaml)]).workloadEndpoints["x/n1-k8s-a-eth0"], w)
    }

    func testWorkloadEndpointWithoutPodSynthesisesOne() throws {
        let set = try Self.decode(Self.wep(Self.wepSpec + "}"))
        let p = try XCTUnwrap(set.pods["x/a"])
        XCTAssertEqual(p.ip?.description, "10.10.0.1")
        XCTAssertEqual(p.nodeName, "n1")
        XCTAssertEqual(p.interface, "mx0a1b2c3d4e5")
        XCTAssertEqual(p.labels, [:])
        XCTAssertEqual(p.ports, [])
        XCTAssertEqual(p.serviceAccount, "default")
        XCTAssertEqual(p.ref, set.workloadEndpoints["x/n1-k8s-a-eth0"]?.ref)
    }

    func testPodsWithoutEndpointKeepTheirStatusAndAnnotation() throws {
        let pod = """
        apiVersion: v1
        kind: Pod
        metadata: {name: b, namespace: x, annotations: {manx.io/interface: veth-b}}
        spec: {containers: []}
        status: {podIP: 10.0.0.9}

        """
        let set = try Self.decode(pod, Self.wep(Self.wepSpec + "}"))
        XCTAssertEqual(set.pods["x/b"]?.ip?.description, "10.0.0.9")
        XCTAssertEqual(set.pods["x/b"]?.interface, "veth-b")
        XCTAssertNil(set.pods["x/b"]?.nodeName)
        XCTAssertEqual(set.pods.count, 2)
    }

    func testDecodeOnlySomeKindsSkipsOthersEvenInvalidOnes() throws {
        let files = [
            ("pool.yaml", Self.pool("{cidr: 10.10.0.0/16}")),
            ("policy.yaml", CalicoValidationTests.policy("{order: abc}")),
            ("broken.yaml", "kind: NetworkPolicy\nspec: [unclosed\n"),
        ]
        let set = try ResourceSet.decode(files: files, kinds: ["IPPool", "Node", "IPAMBlock"])
        XCTAssertEqual(Array(set.ipPools.keys), ["pool-a"])
        XCTAssertEqual(set.policies, [])
        XCTAssertThrowsError(try ResourceSet.decode(files: files))
        // A wanted kind that is invalid, or a broken file mentioning it, fails.
        let bad = [("pool.yaml", Self.pool("{cidr: 10.10.0.1/16}")), ("b.yaml", "kind: IPAMBlock\nspec: [unclosed\n")]
        XCTAssertThrowsError(try ResourceSet.decode(files: bad, kinds: ["IPPool", "IPAMBlock"])) { error in
            let errors = (error as? ValidationErrors)?.errors ?? []
            XCTAssertEqual(errors.map(\.file).sorted(), ["b.yaml", "pool.yaml"])
        }
        // In one file: only the documents naming a wanted kind are parsed,
        // split at `---` lines (not at `----`, nor inside a line).
        let mixed = "---\nkind: NetworkPolicy\nspec: [unclosed\n--- # next\n" + Self.pool("{cidr: 10.10.0.0/16}")
            + "\n---\nkind: NetworkPolicy\nmetadata: {name: '--- x'}\n----\n"
        XCTAssertEqual(ResourceSet.documentTexts(mixed).count, 3)
        XCTAssertEqual(Array(try ResourceSet.decode(files: [("m.yaml", mixed)], kinds: ["IPPool"]).ipPools.keys), ["pool-a"])
        XCTAssertThrowsError(try ResourceSet.decode(files: [("m.yaml", mixed)]))
        XCTAssertTrue(ResourceSet.mentions("kind: Pod", ["Pod"]))
        XCTAssertTrue(ResourceSet.mentions("PPod", ["Pod", "x"]))
        XCTAssertFalse(ResourceSet.mentions("kind: Po", ["Pod"]))
        XCTAssertFalse(ResourceSet.mentions("", ["Pod"]))
        XCTAssertEqual(ResourceSet.documentTexts("a: 1\n---").count, 2)
        // Groups of words: a document is kept when it holds every word of one.
        let pods = (1...12).map { "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p\($0), namespace: ns}\n" }.joined() + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n"
        func kept(_ groups: [[String]]) -> [String] {
            ResourceSet.documentTexts(ResourceSet.documents(of: pods, mentioning: groups)).map { String(decoding: $0, as: UTF8.self) }
        }
        XCTAssertEqual(kept([["Pod", "p1,"], ["Namespace", "ns"]]), ["---\napiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: ns}\n", "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n"])
        XCTAssertEqual(kept([["p1"]]).count, 4, "p1, p10, p11, p12")
        XCTAssertEqual(kept([["ns"]]).count, 13)
        XCTAssertEqual(kept([["Pod", "absent"]]), [])
        XCTAssertEqual(try ResourceSet.decode(files: [("p.yaml", pods)], kinds: ["Pod"], mentioning: [["Pod", "p12"]]).pods.keys.sorted(), ["ns/p12"])
        // The same documents as splitting every document and searching each.
        var rng = IncrementalCompileTests.Generator(state: 3)
        let lines = ["---", "--- # c", "---x", "----", " ---", "kind: Pod", "name: a", "a: Pod", "x: [Namespace, a]", "", "--- {a: Pod}", "-- -"]
        for _ in 0..<500 {
            let text = (0..<Int.random(in: 0..<12, using: &rng)).map { _ in lines.randomElement(using: &rng)! }.joined(separator: "\n")
                + (Bool.random(using: &rng) ? "\n" : "")
            let groups = [[["Pod"]], [["Pod", "a"]], [["a"], ["Namespace"]], [["Namespace", "Pod"]]].randomElement(using: &rng)!
            let words = groups.map { $0.map { Array($0.utf8) } }
            let expected = ResourceSet.documentTexts(text).filter { piece in
                words.contains { group in group.allSatisfy { ResourceSet.find($0, in: piece) != nil } }
            }
            XCTAssertEqual(ResourceSet.documents(of: text, mentioning: groups), String(decoding: expected.joined(), as: UTF8.self), text)
        }
    }

    // MARK: Malformed inputs

    /// (document, field, a phrase of the reason)
    static let cases: [(String, String, String)] = [
        (pool("{blockSize: 26}"), "spec.cidr", "missing"),
        (pool("{cidr: 10.10.0.1/16}"), "spec.cidr", "host bits set"),
        (pool("{cidr: 'fd00::/48'}"), "spec.cidr", "IPv6"),
        (pool("{cidr: 10.10.0.0/33}"), "spec.cidr", "prefix length"),
        (pool("{cidr: 10.10.0.0/16, blockSize: 19}"), "spec.blockSize", "out of range 20-32"),
        (pool("{cidr: 10.10.0.0/24, blockSize: 22}"), "spec.blockSize", "at least its prefix length 24"),
        (pool("{cidr: 10.10.0.0/16, blockSize: big}"), "spec.blockSize", "must be an integer"),
        (pool("{cidr: 10.10.0.0/16, ipipMode: Sometimes}"), "spec.ipipMode", "Always, CrossSubnet or Never"),
        (pool("{cidr: 10.10.0.0/16, ipipMode: Always, vxlanMode: CrossSubnet}"), "spec.vxlanMode", "cannot enable both IPIP and VXLAN"),
        (pool("{cidr: 10.10.0.0/16, natOutgoing: yes please}"), "spec.natOutgoing", "true or false"),
        (pool("{cidr: 10.10.0.0/16, disabled: [true]}"), "spec.disabled", "true or false"),
        (pool("{cidr: 10.10.0.0/16, nodeSelector: \"zone == \"}"), "spec.nodeSelector", "invalid selector"),
        (pool("{cidr: 10.10.0.0/16, ipip: {enabled: true}}"), "spec.ipip", "unknown field"),
        (pool("{cidr: 10.10.0.0/16, allowedUses: [Tunnel]}"), "spec.allowedUses", "must allow Workload"),
        ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p, namespace: x}\nspec: {cidr: 10.1.0.0/16}\n", "metadata.namespace", "not namespaced"),
        (node("{}"), "spec.bgp", "missing"),
        (node("{bgp: {asNumber: 64512}}"), "spec.bgp.ipv4Address", "missing"),
        (node("{bgp: {ipv4Address: 10.99.0.1}}"), "spec.bgp.ipv4Address", "needs a prefix length"),
        (node("{bgp: {ipv4Address: 10.99.0.300/24}}"), "spec.bgp.ipv4Address", "not an IPv4 address"),
        (node("{bgp: {ipv4Address: 10.99.0.1/24}, wireguard: {}}"), "spec.wireguard", "unknown field"),
        (node("{bgp: {ipv4Address: 10.99.0.1/24, peers: []}}"), "spec.bgp.peers", "unknown field"),
        (node("{bgp: {ipv4Address: 10.99.0.1/24}}", labels: "{'bad key!': a}"), "metadata.labels.bad key!", "invalid label key"),
        (felix("{ipipMTU: 100}"), "spec.ipipMTU", "out of range 576-9000"),
        (felix("{vxlanMTU: 9001}"), "spec.vxlanMTU", "out of range 576-9000"),
        (felix("{vxlanMTU: auto}"), "spec.vxlanMTU", "must be an integer"),
        (felix("{}", name: "node1"), "metadata.name", "'default' or 'node.<nodename>'"),
        (block("{pool: p, node: n1}"), "spec.cidr", "missing"),
        (block("{cidr: 10.10.0.1/26, pool: p, node: n1}"), "spec.cidr", "host bits set"),
        (block("{cidr: 10.10.0.0/26, pool: p, node: n1}", name: "blk"), "metadata.name", "must be named '10-10-0-0-26'"),
        (block("{cidr: 10.10.0.0/26, node: n1}"), "spec.pool", "missing"),
        (block("{cidr: 10.10.0.0/26, pool: p, node: ''}"), "spec.node", "must not be empty"),
        (block("{cidr: 10.10.0.0/26, pool: p, node: n1, allocations: [{address: 10.10.0.64, handle: h, node: n1}]}"),
         "spec.allocations[0].address", "outside the block 10.10.0.0/26"),
        (block("{cidr: 10.10.0.0/26, pool: p, node: n1, allocations: [{address: 10.10.0.5, handle: h, node: n1}, {address: 10.10.0.5, handle: i, node: n1}]}"),
         "spec.allocations[1].address", "already allocated by allocations[0]"),
        (block("{cidr: 10.10.0.0/26, pool: p, node: n1, allocations: [{address: 10.10.0.5, node: n1}]}"), "spec.allocations[0].handle", "missing"),
        (block("{cidr: 10.10.0.0/26, pool: p, node: n1, allocations: [{address: ten, handle: h, node: n1}]}"), "spec.allocations[0].address", "not an IPv4 address"),
        (block("{cidr: 10.10.0.0/26, pool: p, node: n1, allocations: [{address: 10.10.0.5, handle: h, node: n1, owner: me}]}"), "spec.allocations[0].owner", "unknown field"),
        (wep("{node: n1, pod: a, containerID: c, interfaceName: mx0, ipNetworks: [10.10.0.1/32, 10.10.0.2/32]}"), "spec.ipNetworks", "exactly one IPv4 /32"),
        (wep("{node: n1, pod: a, containerID: c, interfaceName: mx0, ipNetworks: ['fd00::1/128']}"), "spec.ipNetworks[0]", "IPv6"),
        (wep("{node: n1, pod: a, containerID: c, interfaceName: mx0, ipNetworks: [10.10.0.0/24]}"), "spec.ipNetworks[0]", "single address (/32)"),
        (wep("{node: n1, pod: a, containerID: c, interfaceName: mx0}"), "spec.ipNetworks", "missing"),
        (wep("{node: n1, pod: a, containerID: c, interfaceName: mx0123456789abcd, ipNetworks: [10.10.0.1/32]}"), "spec.interfaceName", "1-15 bytes"),
        (wep("{node: n1, pod: a, containerID: c, interfaceName: 'mx 0', ipNetworks: [10.10.0.1/32]}"), "spec.interfaceName", "not a valid interface name"),
        (wep("{node: n1, pod: a, containerID: c, ipNetworks: [10.10.0.1/32]}"), "spec.interfaceName", "missing"),
        (wep("{node: n1, pod: a, interfaceName: mx0, ipNetworks: [10.10.0.1/32]}"), "spec.containerID", "missing"),
        (wep("{node: n1, pod: a, containerID: c, interfaceName: mx0, ipNetworks: [10.10.0.1/32], mac: 'aa:bb'}"), "spec.mac", "not a MAC address"),
        (wep("{node: n1, orchestrator: mesos, pod: a, containerID: c, interfaceName: mx0, ipNetworks: [10.10.0.1/32]}"), "spec.orchestrator", "must be k8s or cni"),
        (wep("{node: n1, orchestrator: cni, pod: a, containerID: c, interfaceName: mx0, ipNetworks: [10.10.0.1/32]}"), "spec.workload", "missing"),
        (wep("{node: n1, pod: a, containerID: c, interfaceName: mx0, ipNetworks: [10.10.0.1/32], profiles: [kns.x]}"), "spec.profiles", "spec.profiles is for orchestrator cni"),
        (wep("{node: n1, pod: a, containerID: c, interfaceName: mx0, ipNetworks: [10.10.0.1/32]}", name: "a-eth0"), "metadata.name", "must be named 'n1-k8s-a-eth0'"),
    ]

    func testMalformedNetworkingResources() {
        for (yaml, field, reason) in Self.cases {
            do {
                _ = try ResourceSet.decode(files: [("net.yaml", yaml)])
                XCTFail("accepted:\n\(yaml)")
            } catch {
                guard let e = error.errors.first else { XCTFail("\(error)"); continue }
                XCTAssertEqual(e.field, field, "for:\n\(yaml)\ngot: \(e)")
                XCTAssertTrue(e.reason.contains(reason), "reason '\(e.reason)' lacks '\(reason)' for:\n\(yaml)")
                XCTAssertEqual(e.file, "net.yaml")
            }
        }
    }

    func testErrorNamesTheResource() {
        XCTAssertThrowsError(try Self.decode(Self.pool("{cidr: 10.10.0.1/16}"))) { error in
            XCTAssertEqual((error as? ValidationErrors)?.errors.map(\.description),
                           ["net.yaml: IPPool pool-a: spec.cidr: '10.10.0.1/16' has host bits set (the network is 10.10.0.0/16)"])
        }
        XCTAssertThrowsError(try Self.decode(Self.wep("{node: n1, pod: a, containerID: c, interfaceName: mx0, ipNetworks: ['fd00::1/128']}"))) { error in
            XCTAssertEqual((error as? ValidationErrors)?.errors.first?.resource, "WorkloadEndpoint x/n1-k8s-a-eth0")
        }
    }

    // MARK: Cross-resource checks

    func testOverlappingPoolsAreRejectedNamingBoth() {
        XCTAssertThrowsError(try Self.decode(Self.pool("{cidr: 10.10.0.0/16}", name: "pool-a"), Self.pool("{cidr: 10.10.128.0/24}", name: "pool-b"))) { error in
            let errors = (error as? ValidationErrors)?.errors ?? []
            XCTAssertEqual(errors.count, 1)
            XCTAssertEqual(errors.first?.resource, "IPPool pool-b")
            XCTAssertEqual(errors.first?.field, "spec.cidr")
            XCTAssertEqual(errors.first?.reason, "10.10.128.0/24 overlaps IPPool pool-a (10.10.0.0/16); pools must not overlap")
        }
        XCTAssertNoThrow(try Self.decode(Self.pool("{cidr: 10.10.0.0/24}", name: "pool-a"), Self.pool("{cidr: 10.10.1.0/24}", name: "pool-b")))
    }

    func testOverlappingBlocksAndDoubleAllocationsAreRejected() {
        let big = Self.block("{cidr: 10.10.0.0/24, pool: p, node: n1, allocations: [{address: 10.10.0.70, handle: h1, node: n1}]}", name: "10-10-0-0-24")
        let small = Self.block("{cidr: 10.10.0.64/26, pool: p, node: n2, allocations: [{address: 10.10.0.70, handle: h2, node: n2}]}", name: "10-10-0-64-26")
        XCTAssertThrowsError(try Self.decode(big, small)) { error in
            let errors = (error as? ValidationErrors)?.errors ?? []
            XCTAssertEqual(errors.map(\.field), ["spec.cidr", "spec.allocations[0].address"])
            XCTAssertEqual(errors.first?.reason, "10.10.0.64/26 overlaps the IPAM block 10.10.0.0/24")
            XCTAssertEqual(errors.last?.reason, "10.10.0.70 is also allocated in the IPAM block 10.10.0.0/24")
            XCTAssertEqual(errors.first?.resource, "IPAMBlock 10-10-0-64-26")
        }
        let after = Self.block("{cidr: 10.10.1.0/26, pool: p, node: n2}", name: "10-10-1-0-26")
        XCTAssertNoThrow(try Self.decode(big, after))
    }

    func testEndpointsSharingAnAddressOrPodAreRejected() {
        let second = Self.wep("{node: n2, pod: b, containerID: c2, interfaceName: mx1, ipNetworks: [10.10.0.1/32]}", name: "n2-k8s-b-eth0")
        XCTAssertThrowsError(try Self.decode(Self.wep(Self.wepSpec + "}"), second)) { error in
            let e = (error as? ValidationErrors)?.errors.first
            XCTAssertEqual(e?.field, "spec.ipNetworks[0]")
            XCTAssertEqual(e?.reason, "10.10.0.1 is also the address of WorkloadEndpoint x/n1-k8s-a-eth0")
        }
        let samePod = Self.wep("{node: n1, pod: a, endpoint: eth1, containerID: c2, interfaceName: mx1, ipNetworks: [10.10.0.2/32]}", name: "n1-k8s-a-eth1")
        XCTAssertThrowsError(try Self.decode(Self.wep(Self.wepSpec + "}"), samePod)) { error in
            let e = (error as? ValidationErrors)?.errors.first
            XCTAssertEqual(e?.field, "spec.pod")
            XCTAssertTrue(e?.reason.contains("one per pod") ?? false)
        }
    }

    // MARK: Workload interfaces

    static func pod(_ name: String, interface: String, node: String? = nil) -> String {
        let nodeName = node.map { "spec: {nodeName: \($0)}\n" } ?? ""
        return "apiVersion: v1\nkind: Pod\nmetadata: {name: \(name), namespace: x, annotations: {manx.io/interface: \(interface)}}\n\(nodeName)status: {podIP: 10.10.0.\(name.count)}\n"
    }

    func rejection(_ docs: String...) -> [String] {
        do {
            _ = try ResourceSet.decode(files: [("net.yaml", docs.joined(separator: "---\n"))])
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    /// The annotation names where the workload programs go: a bad name, the
    /// loopback or another endpoint's interface is rejected, precisely.
    func testWorkloadInterfaceIsValidatedAndUnique() throws {
        let field = "metadata.annotations.manx.io/interface"
        XCTAssertEqual(rejection(Self.pod("a", interface: "\"eth0\\n-F\"")),
                       ["net.yaml: Pod x/a: \(field): 'eth0\n-F' is not a valid interface name (ASCII, no '/', ':' or whitespace)"])
        XCTAssertEqual(rejection(Self.pod("a", interface: "averyveryverylongname")),
                       ["net.yaml: Pod x/a: \(field): interface name 'averyveryverylongname' must be 1-15 bytes"])
        XCTAssertEqual(rejection(Self.pod("a", interface: "lo")), ["net.yaml: Pod x/a: \(field): 'lo' is not a workload interface"])
        XCTAssertEqual(rejection(Self.pod("a", interface: "veth1"), Self.pod("bb", interface: "veth1")),
                       ["net.yaml: Pod x/bb: \(field): interface veth1 is already the interface of Pod x/a"])
        // A WorkloadEndpoint's interface counts too, and wins over its pod's annotation.
        XCTAssertEqual(rejection(Self.wep(Self.wepSpec + "}"), Self.pod("bb", interface: "mx0a1b2c3d4e5")),
                       ["net.yaml: Pod x/bb: \(field): interface mx0a1b2c3d4e5 is already the interface of WorkloadEndpoint x/n1-k8s-a-eth0"])
        XCTAssertEqual(rejection(Self.wep(Self.wepSpec + "}"), Self.pod("a", interface: "other")), [])
        // Interface names are per node; a pod without a node is on every node.
        XCTAssertEqual(rejection(Self.pod("a", interface: "veth1", node: "n1"), Self.pod("bb", interface: "veth1", node: "n2")), [])
        XCTAssertEqual(rejection(Self.pod("a", interface: "veth1", node: "n1"), Self.pod("bb", interface: "veth1")).count, 1)
    }
}
