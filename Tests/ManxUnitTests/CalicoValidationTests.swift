import ManxModel
import XCTest

/// Malformed Calico resources: each is rejected with the field path and a
/// precise reason, and the batch is rejected whole.
final class CalicoValidationTests: XCTestCase {
    static func policy(_ spec: String, kind: String = "NetworkPolicy") -> String {
        "apiVersion: projectcalico.org/v3\nkind: \(kind)\nmetadata: {name: p\(kind == "NetworkPolicy" ? ", namespace: ns1" : "")}\nspec: \(spec)\n"
    }

    static func rule(_ rule: String) -> String { policy("{ingress: [\(rule)]}") }

    /// (document, field, a phrase of the reason)
    static let cases: [(String, String, String)] = [
        (policy("{order: abc}"), "spec.order", "order must be a number"),
        (policy("{selector: \"app = 'x'\"}"), "spec.selector", "at position"),
        (policy("{selector: \"app == 'x' &&\"}"), "spec.selector", "invalid selector"),
        (rule("{protocol: TCP}"), "spec.ingress[0].action", "missing"),
        (rule("{action: Maybe}"), "spec.ingress[0].action", "must be Allow, Deny, Pass or Log"),
        (rule("{action: Allow, protocol: TCPX}"), "spec.ingress[0].protocol", "protocol must be"),
        (rule("{action: Allow, notProtocol: 300}"), "spec.ingress[0].notProtocol", "protocol must be"),
        (rule("{action: Allow, destination: {ports: [80]}}"), "spec.ingress[0].destination.ports", "need protocol TCP"),
        (rule("{action: Allow, protocol: ICMP, destination: {ports: [http]}}"), "spec.ingress[0].destination.ports", "need protocol TCP"),
        (rule("{action: Allow, protocol: TCP, destination: {ports: ['90:80']}}"), "spec.ingress[0].destination.ports[0]", "start above its end"),
        (rule("{action: Allow, protocol: TCP, destination: {ports: [70000]}}"), "spec.ingress[0].destination.ports[0]", "out of range"),
        (rule("{action: Allow, protocol: TCP, destination: {notPorts: ['1:2:3']}}"), "spec.ingress[0].destination.notPorts[0]", "out of range"),
        (rule("{action: Allow, protocol: TCP, destination: {ports: ['80:']}}"), "spec.ingress[0].destination.ports[0]", "two numbers"),
        (rule("{action: Allow, protocol: TCP, destination: {ports: [Web_Port]}}"), "spec.ingress[0].destination.ports[0]", "port name"),
        (rule("{action: Allow, source: {nets: [10.0.0.0/40]}}"), "spec.ingress[0].source.nets[0]", "prefix length"),
        (rule("{action: Allow, source: {notNets: [abc]}}"), "spec.ingress[0].source.notNets[0]", "not an IPv4 address"),
        (rule("{action: Allow, source: {nets: ['fd00::zz/8']}}"), "spec.ingress[0].source.nets[0]", "not an IPv6 CIDR"),
        (rule("{action: Allow, source: {nets: ['fd00::/129']}}"), "spec.ingress[0].source.nets[0]", "not an IPv6 CIDR"),
        (rule("{action: Allow, source: {nets: [10.0.0.0/8, 'fd00::/8']}}"), "spec.ingress[0]", "mix IPv4 and IPv6"),
        (rule("{action: Allow, source: {nets: [10.0.0.0/8]}, destination: {notNets: ['fd00::/8']}}"), "spec.ingress[0]", "mix IPv4 and IPv6"),
        (rule("{action: Allow, ipVersion: 4, source: {nets: ['fd00::/8']}}"), "spec.ingress[0].ipVersion", "CIDRs are IPv6"),
        (rule("{action: Allow, protocol: TCP, source: {ports: [80]}}"), "spec.ingress[0].source.ports", "source ports are not supported"),
        (rule("{action: Allow, protocol: TCP, icmp: {type: 8}}"), "spec.ingress[0].icmp", "need protocol ICMP"),
        (rule("{action: Allow, protocol: ICMP, icmp: {code: 0}}"), "spec.ingress[0].icmp.code", "needs a type"),
        (rule("{action: Allow, protocol: ICMP, icmp: {type: 300}}"), "spec.ingress[0].icmp.type", "out of range"),
        (rule("{action: Allow, ipVersion: 5}"), "spec.ingress[0].ipVersion", "4 or 6"),
        (rule("{action: Allow, source: {notSelector: 'has('}}"), "spec.ingress[0].source.notSelector", "invalid selector"),
        (rule("{action: Allow, source: {namespaceSelector: 'ns in {x'}}"), "spec.ingress[0].source.namespaceSelector", "invalid selector"),
        (rule("{action: Allow, source: {serviceAccounts: {selector: '!!'}}}"), "spec.ingress[0].source.serviceAccounts.selector", "invalid selector"),
        (rule("{action: Allow, destination: {services: {name: s}}}"), "spec.ingress[0].destination.services", "not supported"),
        (rule("{action: Allow, http: {methods: [GET]}}"), "spec.ingress[0].http", "application-layer"),
        (rule("{action: Allow, source: {nets: [10.0.0.0/8], colour: red}}"), "spec.ingress[0].source.colour", "unknown field"),
        (policy("{types: [Sideways]}"), "spec.types[0]", "Ingress or Egress"),
        (policy("{types: [Egress, Egress]}"), "spec.types[1]", "repeated"),
        (policy("{tier: security}"), "spec.tier", "tier 'security' does not exist"),
        (policy("{colour: red}"), "spec.colour", "unknown field"),
        (policy("{doNotTrack: true, selector: all()}", kind: "GlobalNetworkPolicy"), "spec.doNotTrack", "host endpoints"),
        ("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: g, namespace: x}\nspec: {}\n", "metadata.namespace", "not namespaced"),
        ("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {defaultAction: Allow}\n", "spec.defaultAction", "Deny or Pass"),
        ("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {order: high}\n", "spec.order", "must be a number"),
        ("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s}\nspec: {nets: [10.1.1.1/99]}\n", "spec.nets[0]", "prefix length"),
        ("apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: s, namespace: x, labels: {'a b': c}}\nspec: {nets: []}\n", "metadata.labels.a b", "invalid label key"),
        ("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: s}\nspec: {allowedEgressDomains: [example.com]}\n", "spec.allowedEgressDomains", "not supported"),
        ("apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: kns.x}\nspec: {ingress: [{action: Pass}]}\n", "spec.ingress[0].action", "no next tier"),
        ("apiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {name: h}\nspec: {}\n", "kind", "unknown kind 'HostEndpoint'"),
        ("- just\n- a list\n", "", "expected an object"),
        ("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: ns1}\nspec: {ingress: [{action: Allow}]}\nextra: 1\n", "extra", "unknown field"),
    ]

    func testMalformedCalicoResources() {
        for (yaml, field, reason) in Self.cases {
            do {
                _ = try ResourceSet.decode(files: [("calico.yaml", yaml)])
                XCTFail("accepted:\n\(yaml)")
            } catch {
                guard let e = error.errors.first else { XCTFail("\(error)"); continue }
                XCTAssertEqual(e.field, field, "for:\n\(yaml)\ngot: \(e)")
                XCTAssertTrue(e.reason.contains(reason), "reason '\(e.reason)' lacks '\(reason)' for:\n\(yaml)")
                XCTAssertEqual(e.file, "calico.yaml")
            }
        }
    }

    func testErrorNamesTheResource() throws {
        do {
            _ = try ResourceSet.decode(files: [("p.yaml", Self.rule("{action: Allow, protocol: TCP, destination: {ports: [70000]}}"))])
        } catch {
            XCTAssertEqual(error.errors.first?.description,
                           "p.yaml: NetworkPolicy ns1/p: spec.ingress[0].destination.ports[0]: port '70000' is out of range 0-65535 or malformed")
        }
    }

    func testValidCalicoPolicyDecodes() throws {
        let set = try ResourceSet.decode(files: [("ok.yaml", """
        apiVersion: projectcalico.org/v3
        kind: Tier
        metadata: {name: security}
        spec: {order: 100, defaultAction: Pass}
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: g}
        spec:
          tier: security
          order: 10.5
          selector: has(app)
          namespaceSelector: ns == 'x'
          egress:
          - action: Deny
            protocol: 17
            destination: {nets: [10.0.0.0/8], notNets: [10.1.0.0/16], ports: ['1000:2000', 53], notPorts: [1500]}
          - {action: Log}
          - action: Pass
            notProtocol: TCP
            icmp: null
          - {action: Allow, protocol: ICMP, icmp: {type: 8, code: 0}}
        """)])
        let p = try XCTUnwrap(set.policies.first)
        XCTAssertEqual(p.tier, "security")
        XCTAssertEqual(p.order, 10.5)
        XCTAssertEqual(p.types, [.egress], "Calico's default: egress rules only")
        XCTAssertEqual(p.egress.map(\.action), [.deny, .log, .pass, .allow])
        XCTAssertEqual(p.egress[0].destination.ports, [.range(1000, 2000), .range(53, 53)])
        XCTAssertEqual(p.egress[0].proto, .udp)
        XCTAssertEqual(p.egress[3].icmp, ICMPMatch(type: 8, code: 0))
        XCTAssertEqual(set.tiers["security"]?.defaultPass, true)
    }
}
