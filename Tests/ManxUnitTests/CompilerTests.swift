@testable import ManxCompiler
import ManxModel
import XCTest

final class CompilerTests: XCTestCase {
    static let pods = """
    apiVersion: v1
    kind: Namespace
    metadata: {name: shop, labels: {team: a}}
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {name: other}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: shop, labels: {app: web}, annotations: {manx.io/interface: vweb}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
    status: {podIP: 10.0.0.1}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web2, namespace: shop, labels: {app: web}, annotations: {manx.io/interface: vweb2}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
    status: {podIP: 10.0.0.4}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client, namespace: shop, labels: {app: client}, annotations: {manx.io/interface: vclient}}
    status: {podIP: 10.0.0.2}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: stranger, namespace: other, labels: {app: client}, annotations: {manx.io/interface: vstranger}}
    status: {podIP: 10.0.0.3}
    """

    func compile(_ policy: String, compiler: PolicyCompiler = PolicyCompiler()) throws -> CompiledState {
        compiler.compile(try ResourceSet.decode(files: [("pods.yaml", Self.pods), ("policy.yaml", policy)]))
    }

    func verdict(_ s: CompiledState, _ workload: String, _ direction: String, peer: String, proto: UInt8 = 6, port: UInt16) -> Verdict {
        let ep = s.endpoint(workload)!
        let rs = direction == "in" ? ep.ingressRuleset : ep.egressRuleset
        return s.decide(ruleset: rs, peer: IPv4Address(peer)!, proto: proto, port: port).verdict
    }

    static let webPolicy = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: web, namespace: shop}
    spec:
      podSelector: {matchLabels: {app: web}}
      ingress:
      - from: [{podSelector: {matchLabels: {app: client}}}]
        ports: [{port: http}, {protocol: UDP, port: 5000, endPort: 5003}]
    """

    func testIngressPolicySemantics() throws {
        let s = try compile(Self.webPolicy)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "10.0.0.2", port: 8080), .allow)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "10.0.0.2", port: 8081), .deny)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "10.0.0.2", proto: 17, port: 5003), .allow)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "10.0.0.2", proto: 17, port: 5004), .deny)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "10.0.0.2", proto: 1, port: 0x0800), .deny)
        // Same labels, other namespace: not selected by a namespace-scoped podSelector.
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "10.0.0.3", port: 8080), .deny)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "192.0.2.1", port: 8080), .deny)
        // Not selected, or not isolated in that direction: allowed.
        XCTAssertEqual(verdict(s, "shop/client", "in", peer: "10.0.0.3", port: 1), .allow)
        XCTAssertEqual(verdict(s, "shop/web", "out", peer: "192.0.2.1", port: 1), .allow)
    }

    func testIdenticalPolicySharesOneRuleSet() throws {
        let s = try compile(Self.webPolicy)
        XCTAssertEqual(s.endpoint("shop/web")!.ingressRuleset, s.endpoint("shop/web2")!.ingressRuleset)
        XCTAssertEqual(s.rulesets.count, 1)
    }

    func testRuleSetIDsAreKeptForSameContentAndFreshForNew() throws {
        let compiler = PolicyCompiler()
        let first = try compile(Self.webPolicy, compiler: compiler)
        let again = try compile(Self.webPolicy, compiler: compiler)
        XCTAssertEqual(first.endpoint("shop/web")!.ingressRuleset, again.endpoint("shop/web")!.ingressRuleset)
        let changed = try compile(Self.webPolicy.replacingOccurrences(of: "5003", with: "5004"), compiler: compiler)
        XCTAssertGreaterThan(changed.endpoint("shop/web")!.ingressRuleset, first.endpoint("shop/web")!.ingressRuleset)
        let back = try compile(Self.webPolicy, compiler: compiler)
        XCTAssertGreaterThan(back.endpoint("shop/web")!.ingressRuleset, changed.endpoint("shop/web")!.ingressRuleset,
                             "an id is never reused for other content")
    }

    func testEgressNamedPortsResolveOnThePeer() throws {
        let s = try compile("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: out, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: client}}
          policyTypes: [Egress]
          egress: [{ports: [{port: http}]}]
        """)
        XCTAssertEqual(verdict(s, "shop/client", "out", peer: "10.0.0.1", port: 8080), .allow)
        XCTAssertEqual(verdict(s, "shop/client", "out", peer: "10.0.0.1", port: 80), .deny)
        XCTAssertEqual(verdict(s, "shop/client", "out", peer: "10.0.0.3", port: 8080), .deny, "stranger has no port named http")
    }

    func testIPBlockExceptAndAdditivePolicies() throws {
        let s = try compile("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: a, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.0.0.2/32]}}]}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: b, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24}}], ports: [{port: 443}]}]
        """)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "10.0.0.3", port: 1), .allow)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "10.0.0.2", port: 1), .deny)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "10.0.0.200", port: 1), .allow)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "10.0.1.1", port: 1), .deny)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "192.0.2.9", port: 443), .allow)
        XCTAssertEqual(verdict(s, "shop/web", "in", peer: "192.0.2.9", port: 80), .deny)
    }

    func testPortPrefixesCoverRangesExactly() {
        for (lo, hi) in [(0, 65535), (1, 1), (80, 80), (1000, 2000), (1, 65535), (32768, 65535), (5, 6)] as [(UInt32, UInt32)] {
            var covered = Set<UInt32>()
            for (value, bits) in portPrefixes(lo...hi) {
                let size = UInt32(1) << UInt32(16 - bits)
                XCTAssertEqual(UInt32(value) % size, 0, "aligned")
                for v in UInt32(value)..<(UInt32(value) + size) { XCTAssertTrue(covered.insert(v).inserted) }
            }
            XCTAssertEqual(covered, Set(lo...hi))
        }
        XCTAssertEqual(portPrefixes(0...65535).count, 1)
        XCTAssertEqual(portPrefixes(1...65535).count, 16)
    }

    func testTableSizeDoesNotGrowWithUnrelatedPods() throws {
        var pods = Self.pods
        for i in 0..<200 {
            pods += "\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p\(i), namespace: other, labels: {app: batch}}\nstatus: {podIP: 10.9.\(i / 250).\(i % 250 + 1)}\n"
        }
        let s = PolicyCompiler().compile(try ResourceSet.decode(files: [("pods.yaml", pods), ("policy.yaml", Self.webPolicy)]))
        let small = try compile(Self.webPolicy)
        XCTAssertEqual(s.rulesets.values.first?.count, small.rulesets.values.first?.count)
    }
}
