@testable import ManxModel
import ManxSelectors
import XCTest

final class ModelTests: XCTestCase {
    func decode(_ yaml: String, file: String = "test.yaml") throws -> ResourceSet {
        try ResourceSet.decode(files: [(file, yaml)])
    }

    /// The first error a batch reports.
    func rejection(_ yaml: String) -> ValidationError? {
        do {
            _ = try decode(yaml)
            return nil
        } catch {
            return (error as? ValidationErrors)?.errors.first
        }
    }

    func testKubernetesPolicyTranslation() throws {
        let set = try decode("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: NotIn, values: [db]}]}
          ingress:
          - from:
            - podSelector: {matchLabels: {role: client}}
            - namespaceSelector: {matchLabels: {team: a}}
              podSelector: {}
            - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
            ports:
            - port: 80
            - {protocol: UDP, port: 5000, endPort: 5010}
            - {port: http}
          egress:
          - {}
        """)
        let p = try XCTUnwrap(set.policies.first)
        XCTAssertEqual(p.name, "knp.default.web")
        XCTAssertEqual(p.order, 1000)
        XCTAssertEqual(p.types, [.ingress, .egress])
        XCTAssertEqual(p.appliesTo.namespaces, .named("shop"))
        let pod = ["projectcalico.org/orchestrator": "k8s"]
        XCTAssertTrue(p.appliesTo.selector.matches(pod.merging(["app": "web"]) { $1 }))
        XCTAssertFalse(p.appliesTo.selector.matches(pod.merging(["app": "web", "tier": "db"]) { $1 }))
        // Another runtime's container with the same labels: not a pod.
        XCTAssertFalse(p.appliesTo.selector.matches(["app": "web", "projectcalico.org/orchestrator": "cni"]))
        // 3 peers x 3 ports, each an Allow rule.
        XCTAssertEqual(p.ingress.count, 9)
        XCTAssertEqual(p.ingress[0].source.endpoints?.namespaces, .named("shop"))
        XCTAssertEqual(p.ingress[0].destination.ports, [.range(80, 80)])
        XCTAssertEqual(p.ingress[0].proto, .tcp)
        XCTAssertEqual(p.ingress[1].destination.ports, [.range(5000, 5010)])
        XCTAssertEqual(p.ingress[1].proto, .udp)
        XCTAssertEqual(p.ingress[2].destination.ports, [.named("http")])
        XCTAssertEqual(p.ingress[6].source.nets.map(\.description), ["10.0.0.0/8"])
        XCTAssertEqual(p.ingress[6].source.notNets.map(\.description), ["10.1.0.0/16"])
        // An empty egress rule allows everything.
        XCTAssertEqual(p.egress.count, 1)
        XCTAssertTrue(p.egress[0].destination.isEmpty)
    }

    func testPolicyTypesDefaultToIngressOnly() throws {
        let set = try decode("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-all, namespace: a}
        spec: {podSelector: {}}
        """)
        XCTAssertEqual(set.policies.first?.types, [.ingress])
        XCTAssertEqual(set.policies.first?.ingress.count, 0)
    }

    func testPodsAndNamespaces() throws {
        let set = try decode("""
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop, labels: {team: a}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: web-1, namespace: shop, labels: {app: web}, annotations: {manx.io/interface: cali1}}
        spec:
          serviceAccountName: web
          containers: [{name: c, image: nginx, ports: [{name: http, containerPort: 8080}, {containerPort: 9000, protocol: UDP}]}]
        status: {podIP: 10.2.3.4}
        """)
        XCTAssertEqual(set.namespaces["shop"]?.labels["kubernetes.io/metadata.name"], "shop")
        let pod = try XCTUnwrap(set.pods["shop/web-1"])
        XCTAssertEqual(pod.ip?.description, "10.2.3.4")
        XCTAssertEqual(pod.interface, "cali1")
        XCTAssertEqual(pod.serviceAccount, "web")
        XCTAssertEqual(pod.ports, [NamedPort(name: "http", proto: .tcp, port: 8080)])
    }

    func testErrorsNameFileResourceFieldAndReason() {
        let e = rejection("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: bad, namespace: ns1}
        spec:
          podSelector: {}
          ingress: [{ports: [{port: 70000}]}]
        """)
        XCTAssertEqual(e?.file, "test.yaml")
        XCTAssertEqual(e?.resource, "NetworkPolicy ns1/bad")
        XCTAssertEqual(e?.field, "spec.ingress[0].ports[0].port")
        XCTAssertEqual(e?.reason, "port 70000 is out of range 1-65535")
        XCTAssertEqual(e?.description, "test.yaml: NetworkPolicy ns1/bad: spec.ingress[0].ports[0].port: port 70000 is out of range 1-65535")
    }

    func testAnUnknownKindIsNamedByItsMetadata() {
        let e = rejection("apiVersion: v1\nkind: Gadget\nmetadata: {name: g1, namespace: ns1}\n")
        XCTAssertEqual(e?.description, "test.yaml: Gadget ns1/g1: kind: unknown kind 'Gadget' in apiVersion 'v1'")
        XCTAssertEqual(rejection("apiVersion: nope/v9\nkind: NetworkPolicy\nmetadata: {name: p}\n")?.resource, "NetworkPolicy p")
        XCTAssertEqual(rejection("apiVersion: v1\nkind: Gadget\n")?.resource, "document 1")
    }

    /// Each malformed input with the field and a phrase of the reason.
    static let malformed: [(String, String, String)] = [
        ("kind: NetworkPolicy\nmetadata: {name: a}", "apiVersion", "missing"),
        ("apiVersion: v1\nkind: Gadget\nmetadata: {name: a}", "kind", "unknown kind 'Gadget'"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingres: []}", "spec.ingres", "unknown field"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {}", "spec.podSelector", "missing"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: A_b}\nspec: {podSelector: {}}", "metadata.name", "not a valid name"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, policyTypes: [Sideways]}", "spec.policyTypes[0]", "Ingress or Egress"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{ports: [{protocol: ICMP, port: 1}]}]}", "spec.ingress[0].ports[0].protocol", "TCP, UDP or SCTP"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{ports: [{port: 0}]}]}", "spec.ingress[0].ports[0].port", "out of range"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}]}", "spec.ingress[0].ports[0].endPort", "below port"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{ports: [{port: http, endPort: 80}]}]}", "spec.ingress[0].ports[0].endPort", "numeric port"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{ports: [{port: Bad_Name}]}]}", "spec.ingress[0].ports[0].port", "port name"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{ports: [{endPort: 80}]}]}", "spec.ingress[0].ports[0].endPort", "requires port"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}", "spec.ingress[0].from[0].ipBlock.cidr", "prefix length"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 300.0.0.0/8}}]}]}", "spec.ingress[0].from[0].ipBlock.cidr", "not an IPv4 address"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]}", "spec.ingress[0].from[0].ipBlock.except[0]", "strictly inside"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}", "spec.ingress[0].from[0].ipBlock", "cannot be combined"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {}, ingress: [{from: [{}]}]}", "spec.ingress[0].from[0]", "must set"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {matchExpressions: [{key: a, operator: Near}]}}", "spec.podSelector.matchExpressions[0].operator", "In, NotIn"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {matchExpressions: [{key: a, operator: In}]}}", "spec.podSelector.matchExpressions[0].values", "at least one value"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}", "spec.podSelector.matchExpressions[0].values", "takes no values"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {matchLabels: {'-bad': x}}}", "spec.podSelector.matchLabels.-bad", "invalid label key"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {matchLabels: {app: 'white space'}}}", "spec.podSelector.matchLabels.app", "invalid label value"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.0.0.300}", "status.podIP", "not an IPv4 address"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{ports: [{containerPort: 99999}]}]}", "spec.containers[0].ports[0].containerPort", "out of range"),
        ("apiVersion: v1\nkind: Namespace\nmetadata: {name: n, namespace: x}", "metadata.namespace", "not namespaced"),
        ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: x}\nspec: {podSelector: {}}", "metadata.name", "missing"),
    ]

    func testMalformedInputsAreRejectedPrecisely() {
        for (yaml, field, reason) in Self.malformed {
            guard let e = rejection(yaml) else { XCTFail("accepted: \(yaml)"); continue }
            XCTAssertEqual(e.field, field, "for: \(yaml)\ngot: \(e)")
            XCTAssertTrue(e.reason.contains(reason), "reason '\(e.reason)' lacks '\(reason)' for: \(yaml)")
        }
    }

    func testBrokenLaterDocumentRejectsTheWholeFile() {
        // Yams' load_all would silently stop at the broken document.
        let yaml = """
        apiVersion: v1
        kind: Namespace
        metadata: {name: ok}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: [unclosed
        """
        XCTAssertThrowsError(try decode(yaml)) { error in
            let e = (error as? ValidationErrors)?.errors.first
            XCTAssertEqual(e?.file, "test.yaml")
            XCTAssertTrue(e?.reason.hasPrefix("invalid YAML") ?? false, "\(String(describing: e))")
        }
    }

    func testDuplicatesAcrossFilesAreRejected() {
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n"
        XCTAssertThrowsError(try ResourceSet.decode(files: [("one.yaml", ns), ("two.yaml", ns)])) { error in
            XCTAssertEqual((error as? ValidationErrors)?.errors.first?.reason, "duplicate: already defined in one.yaml")
        }
    }

    /// policyTypes defaults as the API server's: Ingress, and Egress only
    /// when there are egress rules.
    func testKubernetesPolicyTypesDefaultAsTheAPIServers() throws {
        func types(_ spec: String) throws -> Set<Policy.Direction> {
            let yaml = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: ns}\nspec: {podSelector: {}\(spec)}\n"
            return try XCTUnwrap(decode(yaml).policies.first).types
        }
        XCTAssertEqual(try types(""), [.ingress])
        XCTAssertEqual(try types(", egress: []"), [.ingress])
        XCTAssertEqual(try types(", egress: null"), [.ingress])
        XCTAssertEqual(try types(", ingress: []"), [.ingress])
        XCTAssertEqual(try types(", egress: [{}]"), [.ingress, .egress])
        XCTAssertEqual(try types(", policyTypes: [Egress], egress: []"), [.egress])
        XCTAssertEqual(try types(", policyTypes: [Ingress, Egress]"), [.ingress, .egress])
    }

    /// IPv6 CIDRs are valid where Kubernetes and Calico take them; the
    /// rules (and peers) they make are IPv6 ones, which no IPv4 packet
    /// matches, and a network set keeps only its IPv4 nets.
    func testIPv6CIDRsMakeIPv6Rules() throws {
        let calico = """
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: p, namespace: ns}
        spec:
          ingress:
          - {action: Deny, source: {notNets: ['fd00::/8']}}
          - {action: Allow, source: {nets: ['2001:db8::1']}}
          - {action: Allow, source: {nets: [10.0.0.0/8]}}
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkSet
        metadata: {name: s}
        spec: {nets: [192.0.2.0/24, '2001:db8::/32']}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: k, namespace: ns}
        spec:
          podSelector: {}
          ingress: [{from: [{ipBlock: {cidr: 'fd00::/8', except: ['fd00:1::/32']}}, {ipBlock: {cidr: 10.0.0.0/8}}]}]
        """
        let set = try decode(calico)
        let p = try XCTUnwrap(set.policies.first { $0.name == "p" })
        XCTAssertEqual(p.ingress.map(\.ipVersion), [6, 6, nil])
        XCTAssertEqual(p.ingress[0].source.notNets, [], "no IPv4 match-all")
        XCTAssertEqual(set.networkSets.first?.nets.map(\.description), ["192.0.2.0/24"])
        let k = try XCTUnwrap(set.policies.first { $0.name == "knp.default.k" })
        XCTAssertEqual(k.ingress.map(\.ipVersion), [6, nil])
        XCTAssertEqual(rejection("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: k}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 'fd00::/8', except: ['fe80::/16']}}]}]}")?.reason,
                       "except 'fe80::/16' must be strictly inside cidr 'fd00::/8'")
        XCTAssertEqual(IPv6Prefix("fd00::1/8"), IPv6Prefix("fd00::/8"), "host bits cleared")
        XCTAssertNil(IPv6Prefix("10.0.0.1"))
    }

    func testDNSNames() {
        for good in ["a", "a-b", "a.b", "0", "x1.y2-z"] { XCTAssertNil(ResourceDecoder.validateDNSName(good), good) }
        for bad in ["", "-a", "a-", ".a", "a.", "A", "a_b", "é", "a b", String(repeating: "a", count: 254)] {
            XCTAssertNotNil(ResourceDecoder.validateDNSName(bad), bad)
        }
        XCTAssertNil(ResourceDecoder.validateDNSLabel("kube-system"))
        for bad in ["a.b", "-a", "", "Ab", String(repeating: "a", count: 64)] { XCTAssertNotNil(ResourceDecoder.validateDNSLabel(bad), bad) }
    }

    func testCIDRParsing() {
        XCTAssertEqual(try CIDR.parse("10.1.2.3/8").get().description, "10.0.0.0/8")
        XCTAssertEqual(try CIDR.parse("10.1.2.3").get().description, "10.1.2.3/32")
        XCTAssertNil(try? CIDR.parse("10.1.2/8").get())
        XCTAssertNil(try? CIDR.parse("010.1.2.3/8").get())
        XCTAssertNil(try? CIDR.parse("fe80::/10").get())
        XCTAssertTrue(try CIDR.parse("10.0.0.0/8").get().contains(CIDR.parse("10.2.0.0/16").get()))
        for bad in ["", "10.1.2.3/", "10.1.2.3/33", "10.1.2.3/-1", "10.1.2.3/ 8", "256.1.1.1", "1.2.3.04", "1..2.3", "1.2.3.4.5",
                    "1.2.3.", ".1.2.3", "1.2.3.4 ", "\u{661}.2.3.4", "1.2.3.1000", "1.2.3.4/8/9", "0x1.2.3.4"] {
            XCTAssertNil(try? CIDR.parse(bad).get(), bad)
        }
        XCTAssertEqual(IPv4Address("0.0.0.0")?.value, 0)
        XCTAssertEqual(IPv4Address("255.255.255.255")?.value, UInt32.max)
        XCTAssertEqual(try CIDR.parse("0.0.0.0/0").get(), CIDR.any)
        if case .failure(let f) = CIDR.parse("1.2.3.4/8/9") { XCTAssertEqual(f.reason, "'1.2.3.4/8/9' is not a CIDR (more than one '/')") }
        if case .failure(let f) = CIDR.parse("fe80::1/64") { XCTAssertEqual(f.reason, "'fe80::1/64' is IPv6; only IPv4 is supported") }
    }
}
