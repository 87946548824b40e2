@testable import ManxCompiler
import ManxModel
import XCTest

/// Ids are keyed by content, survive a new compiler that recovers them,
/// and are never handed out twice.
final class AllocationTests: XCTestCase {
    func testSHA256KnownAnswers() {
        XCTAssertEqual(Digest.sha256("").description, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(Digest.sha256("abc").description, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(Digest.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq").description,
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(Digest.sha256(String(repeating: "a", count: 1000)).description,
                       "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
        let d = Digest.sha256("manx")
        XCTAssertEqual(Digest(hex: d.description), d)
    }

    static let pods = CompilerTests.pods

    /// pod-3 accepts from pod-1 (shop/client); the churn policy names
    /// other peers, and changes.
    static let base = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: web, namespace: shop}
    spec:
      podSelector: {matchLabels: {app: web}}
      ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 8080}]}]
    """

    static func churn(_ variant: Int) -> String {
        """
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: churn}
        spec:
          selector: app == 'client'
          ingress:
          - {action: Allow, source: {nets: [192.0.\(variant).0/24]}}
          - {action: Allow, source: {selector: app == 'x\(variant)'}}
        """
    }

    func compile(_ compiler: PolicyCompiler, _ docs: String...) throws -> CompiledState {
        compiler.compile(try ResourceSet.decode(files: [("pods.yaml", Self.pods)] + docs.enumerated().map { ("p\($0.offset).yaml", $0.element) }))
    }

    func identity(_ s: CompiledState, _ ip: String) -> UInt32 {
        s.ipcache.first { $0.cidr == CIDR(IPv4Address(ip)!, 32) }!.identity
    }

    func testUnrelatedChurnRenumbersNothingThatStays() throws {
        let compiler = PolicyCompiler()
        let before = try compile(compiler, Self.base)
        let client = identity(before, "10.0.0.2")
        let webRuleset = before.endpoint("shop/web")!.ingressRuleset
        let webRule = before.rules.first { $0.value.policy.hasSuffix("knp.default.web") }!.key
        for variant in 1...5 {
            // The churn policy's matchers come first in compile order now.
            let s = try compile(compiler, Self.churn(variant), Self.base)
            XCTAssertEqual(identity(s, "10.0.0.2"), client, "variant \(variant)")
            XCTAssertEqual(s.endpoint("shop/web")!.ingressRuleset, webRuleset)
            XCTAssertEqual(s.rules.first { $0.value.policy.hasSuffix("knp.default.web") }!.key, webRule)
        }
    }

    func testARecoveringCompilerGivesEveryContentItsId() throws {
        let first = PolicyCompiler()
        _ = try compile(first, Self.base)
        let state = try compile(first, Self.churn(1), Self.base)
        let restarted = PolicyCompiler(recovering: state.allocations)
        let again = try compile(restarted, Self.base, Self.churn(1))
        XCTAssertEqual(again.allocations, state.allocations)
        XCTAssertEqual(again.ipcache.sorted { $0.cidr < $1.cidr }, state.ipcache.sorted { $0.cidr < $1.cidr })
        XCTAssertEqual(again.endpoints.map(\.ingressRuleset), state.endpoints.map(\.ingressRuleset))
        XCTAssertEqual(again.rules, state.rules)
    }

    func testAnIdIsNeverBoundToOtherContent() throws {
        let compiler = PolicyCompiler()
        var seen: [UInt32: Digest] = [:]
        for variant in [1, 2, 1, 3, 2] {
            let s = try compile(compiler, Self.base, Self.churn(variant))
            for (key, id) in s.allocations.ids where key.kind == .identity {
                if let earlier = seen[id] { XCTAssertEqual(earlier, key.digest, "identity \(id) rebound") }
                seen[id] = key.digest
            }
            XCTAssertEqual(Set(s.allocations.ids.filter { $0.key.kind == .identity }.values), Set(s.identities.keys).subtracting([ReservedIdentity.world]))
        }
    }
}
