@testable import ManxDatastore
@testable import ManxModel
import XCTest

/// `bpfctl get`: kinds by their names and calicoctl's short names, the
/// default namespace, and YAML that reads back as the same resource.
final class ResourceQueryTests: XCTestCase {
    let keys = [
        "a.yaml": """
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: p1, namespace: default}
        spec: {selector: all()}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: k1, namespace: shop}
        spec: {podSelector: {}}
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: g1}
        spec: {selector: all()}
        """,
        "broken.yaml": "kind: [",
    ]

    func names(_ q: ResourceQuery) -> [String] { q.select(keys).matches.map { $0.document.header.description } }

    func testSelectsAKindByItsNamesAndNamespaces() throws {
        XCTAssertEqual(names(try ResourceQuery(kind: "np")), ["NetworkPolicy default/p1"])
        XCTAssertEqual(names(try ResourceQuery(kind: "NetworkPolicies", allNamespaces: true)), ["NetworkPolicy default/p1", "NetworkPolicy shop/k1"])
        XCTAssertEqual(names(try ResourceQuery(kind: "networkpolicy", namespace: "shop")), ["NetworkPolicy shop/k1"])
        XCTAssertEqual(names(try ResourceQuery(kind: "gnp")), ["GlobalNetworkPolicy g1"])
        XCTAssertEqual(names(try ResourceQuery(kind: "gnp", name: "nope")), [])
        XCTAssertEqual(try ResourceQuery(kind: "np", name: "x", namespace: "y").missing, "NetworkPolicy y/x")
        XCTAssertEqual(try ResourceQuery(kind: "gnp").select(keys).errors.map(\.file), ["broken.yaml"], "a broken key selects nothing and is named")
        XCTAssertThrowsError(try ResourceQuery(kind: "widgets")) { XCTAssertTrue("\($0)".contains("unknown resource type 'widgets'")) }
        XCTAssertThrowsError(try ResourceQuery(kind: "gnp", namespace: "x")) { XCTAssertTrue("\($0)".contains("not namespaced")) }
    }

    func testYAMLReadsBackAsTheSameResource() throws {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: 'y', labels: {n: '10', b: 'true', e: ''}, annotations: {s: 'a: b', t: '~', u: ' x', w: 'null', v: 'fd00::/8'}}\n"
        let document = try XCTUnwrap(ResourceSet.documents(file: "ns.yaml", text: text).first)
        let yaml = try ResourceSet.yaml(ofJSON: document.json)
        XCTAssertFalse(yaml.contains("\"apiVersion\""), "keys are not quoted:\n\(yaml)")
        XCTAssertEqual(try ResourceSet.documents(file: "back.yaml", text: yaml).first?.json, document.json, yaml)
    }
}
