import ManxModel
import ManxReference
import XCTest

/// The reference evaluator, checked directly against the Calico semantics
/// it encodes (it is the oracle for the differential tests, so its own
/// cases are written from the semantics, not from the compiler).
final class ReferenceEvaluatorTests: XCTestCase {
    static let cluster = """
    apiVersion: v1
    kind: Namespace
    metadata: {name: shop, labels: {team: a}}
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {name: other, labels: {team: b}}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: shop, labels: {app: web}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: dns, protocol: UDP, containerPort: 53}]}]}
    status: {podIP: 10.0.0.1}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client, namespace: shop, labels: {app: client}}
    spec: {serviceAccountName: robot}
    status: {podIP: 10.0.0.2}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: stranger, namespace: other, labels: {app: client}}
    spec: {containers: [{name: c, ports: [{name: http, containerPort: 9090}]}]}
    status: {podIP: 10.0.0.3}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: lost, namespace: ghost, labels: {app: client}}
    status: {podIP: 10.0.0.9}
    ---
    apiVersion: projectcalico.org/v3
    kind: NetworkSet
    metadata: {name: partners, namespace: shop, labels: {kind: partner}}
    spec: {nets: [192.0.2.0/24]}
    ---
    apiVersion: projectcalico.org/v3
    kind: GlobalNetworkSet
    metadata: {name: world-partners, labels: {kind: partner}}
    spec: {nets: [198.51.100.0/24]}
    """

    func evaluator(_ policy: String) throws -> ReferenceEvaluator {
        ReferenceEvaluator(try ResourceSet.decode(files: [("cluster.yaml", Self.cluster), ("policy.yaml", policy)]))
    }

    /// Asserts the verdict, showing the evaluator's explanation on failure.
    func check(_ e: ReferenceEvaluator, _ endpoint: String, _ direction: Policy.Direction, _ peer: String,
               proto: UInt8 = 6, port: UInt16, _ expected: Bool, _ note: String = "",
               file: StaticString = #filePath, line: UInt = #line) {
        let (allowed, why) = e.explain(endpoint: endpoint, direction: direction, peer: IPv4Address(peer)!, proto: proto, port: port)
        XCTAssertEqual(allowed, expected, "\(note) \(endpoint) \(direction.rawValue) peer \(peer) proto \(proto) port \(port): \(why)",
                       file: file, line: line)
        XCTAssertEqual(e.allows(endpoint: endpoint, direction: direction, peer: IPv4Address(peer)!, proto: proto, port: port),
                       allowed, file: file, line: line)
    }

    func testKubernetesIngressIsolation() throws {
        let e = try evaluator("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress:
          - from: [{podSelector: {matchLabels: {app: client}}}]
            ports: [{port: 8080}, {protocol: UDP, port: 5000, endPort: 5003}]
        """)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 8080, true)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 8081, false)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 17, port: 5000, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 17, port: 5003, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 17, port: 5004, false)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 6, port: 5001, false)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 1, port: 0x0800, false)
        // Same labels in another namespace: the podSelector is namespace-scoped.
        check(e, "shop/web", .ingress, "10.0.0.3", port: 8080, false)
        check(e, "shop/web", .ingress, "192.0.2.1", port: 8080, false)
        // Not isolated for egress, and the client is not selected at all.
        check(e, "shop/web", .egress, "192.0.2.1", port: 1, true)
        check(e, "shop/client", .ingress, "10.0.0.3", port: 1, true)
    }

    func testKubernetesEgressOnlyPolicyLeavesIngressOpen() throws {
        let e = try evaluator("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: lockdown, namespace: shop}
        spec: {podSelector: {}, policyTypes: [Egress]}
        """)
        check(e, "shop/web", .egress, "10.0.0.2", port: 80, false)
        check(e, "shop/web", .ingress, "10.0.0.3", port: 80, true)
        check(e, "other/stranger", .egress, "10.0.0.1", port: 80, true)
    }

    func testNamespaceSelectors() throws {
        let e = try evaluator("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress:
          - from: [{namespaceSelector: {matchLabels: {team: b}}}]
            ports: [{port: 1}]
          - from: [{namespaceSelector: {}}]
            ports: [{port: 2}]
          - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ghost}}, podSelector: {matchLabels: {app: client}}}]
            ports: [{port: 3}]
        """)
        check(e, "shop/web", .ingress, "10.0.0.3", port: 1, true)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 1, false)
        // {} selects every namespace, including one with no Namespace resource.
        check(e, "shop/web", .ingress, "10.0.0.2", port: 2, true)
        check(e, "shop/web", .ingress, "10.0.0.9", port: 2, true)
        // The name label exists even without the Namespace resource.
        check(e, "shop/web", .ingress, "10.0.0.9", port: 3, true)
        check(e, "shop/web", .ingress, "10.0.0.3", port: 3, false)
    }

    func testIPBlockExcept() throws {
        let e = try evaluator("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.0.0.2/32, 10.0.0.8/30]}}]}]
          egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]}]
        """)
        check(e, "shop/web", .ingress, "10.0.0.3", port: 80, true)
        check(e, "shop/web", .ingress, "10.0.0.200", port: 80, true)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 80, false)
        check(e, "shop/web", .ingress, "10.0.0.9", port: 80, false)
        check(e, "shop/web", .ingress, "10.0.1.1", port: 80, false)
        check(e, "shop/web", .egress, "8.8.8.8", proto: 17, port: 53, true)
        check(e, "shop/web", .egress, "10.0.0.2", port: 80, false)
    }

    func testNamedPortsResolveOnTheDestination() throws {
        let e = try evaluator("""
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: in, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{ports: [{port: http}, {protocol: TCP, port: dns}]}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: out, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: client}}
          policyTypes: [Egress]
          egress: [{ports: [{port: http}]}]
        """)
        // Ingress: the endpoint's own ports.
        check(e, "shop/web", .ingress, "10.0.0.3", port: 8080, true)
        check(e, "shop/web", .ingress, "10.0.0.3", port: 9090, false)
        check(e, "shop/web", .ingress, "10.0.0.3", proto: 17, port: 8080, false)
        check(e, "shop/web", .ingress, "10.0.0.3", port: 53, false, "dns is a UDP port; the rule is TCP")
        // Egress: the peer's ports; a peer without a workload has none.
        check(e, "shop/client", .egress, "10.0.0.1", port: 8080, true)
        check(e, "shop/client", .egress, "10.0.0.3", port: 9090, true)
        check(e, "shop/client", .egress, "10.0.0.3", port: 8080, false)
        check(e, "shop/client", .egress, "10.0.0.9", port: 8080, false)
        check(e, "shop/client", .egress, "192.0.2.1", port: 8080, false)
    }

    func testOrderTiesBreakByNameAndNoOrderComesLast() throws {
        let e = try evaluator("""
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: bbb, namespace: shop}
        spec: {order: 10, selector: "app == 'web'", ingress: [{action: Allow, protocol: TCP}]}
        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: aaa, namespace: shop}
        spec: {order: 10, selector: "app == 'web'", ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]}
        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: aaa-unordered, namespace: shop}
        spec: {selector: "app == 'web'", ingress: [{action: Allow, protocol: UDP}]}
        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: zzz, namespace: shop}
        spec: {order: 500, selector: "app == 'web'", ingress: [{action: Deny, protocol: UDP}]}
        """)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 80, false)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 81, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 17, port: 81, false, "order 500 before no order")
    }

    static let securityTier = """
    apiVersion: projectcalico.org/v3
    kind: Tier
    metadata: {name: security}
    spec: {order: 100}
    """

    func testPassSkipsTheRestOfTheTier() throws {
        let e = try evaluator(Self.securityTier + """

        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: security.first}
        spec:
          tier: security
          order: 1
          selector: "app == 'web'"
          ingress: [{action: Pass, source: {selector: "app == 'client'"}}, {action: Allow, protocol: UDP}]
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: security.second}
        spec: {tier: security, order: 2, selector: "app == 'web'", ingress: [{action: Deny}]}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{ports: [{port: 80}]}]
        """)
        // Passed: the security tier's Deny is skipped, the default tier decides.
        check(e, "shop/web", .ingress, "10.0.0.2", port: 80, true)
        check(e, "shop/web", .ingress, "10.0.0.3", port: 80, true)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 81, false)
        // Not passed: the Allow (UDP) or the Deny of the second policy decides.
        check(e, "shop/web", .ingress, "192.0.2.1", proto: 17, port: 81, true)
        check(e, "shop/web", .ingress, "192.0.2.1", port: 80, false)
        XCTAssertTrue(e.explain(endpoint: "shop/web", direction: .ingress, peer: IPv4Address("192.0.2.1")!, proto: 6, port: 80)
            .why.contains("security.second"))
    }

    func testTierDefaultActionAndTiersWithoutApplyingPolicies() throws {
        let policies = """
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: security.web}
        spec: {tier: security, selector: "app == 'web'", ingress: [{action: Allow, protocol: TCP, destination: {ports: [443]}}]}
        """
        let deny = try evaluator(Self.securityTier + "\n" + policies)
        check(deny, "shop/web", .ingress, "10.0.0.2", port: 443, true)
        check(deny, "shop/web", .ingress, "10.0.0.2", port: 80, false)
        // A tier with no policy for the endpoint does not count.
        check(deny, "shop/client", .ingress, "10.0.0.1", port: 80, true)
        let pass = try evaluator(Self.securityTier.replacingOccurrences(of: "order: 100", with: "order: 100, defaultAction: Pass")
            + "\n" + policies)
        check(pass, "shop/web", .ingress, "10.0.0.2", port: 80, true)
        // After a default Pass, the next counting tier still decides.
        let passThenDeny = try evaluator(Self.securityTier.replacingOccurrences(of: "order: 100", with: "order: 100, defaultAction: Pass")
            + "\n" + policies + """

            ---
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: deny-all, namespace: shop}
            spec: {podSelector: {}}
            """)
        check(passThenDeny, "shop/web", .ingress, "10.0.0.2", port: 80, false)
        check(passThenDeny, "shop/web", .ingress, "10.0.0.2", port: 443, true)
    }

    func testTiersAreOrderedByOrderThenName() throws {
        let e = try evaluator("""
        apiVersion: projectcalico.org/v3
        kind: Tier
        metadata: {name: beta}
        spec: {order: 50}
        ---
        apiVersion: projectcalico.org/v3
        kind: Tier
        metadata: {name: alpha}
        spec: {order: 50}
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: beta.p}
        spec: {tier: beta, selector: all(), ingress: [{action: Deny}]}
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: alpha.p}
        spec: {tier: alpha, selector: all(), ingress: [{action: Allow, protocol: TCP}]}
        """)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 80, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 17, port: 80, false)
    }

    func testLogContinuesWithTheNextRule() throws {
        let e = try evaluator("""
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: logged, namespace: shop}
        spec:
          selector: "app == 'web'"
          ingress: [{action: Log}, {action: Deny, protocol: TCP, destination: {ports: [22]}}, {action: Log, protocol: UDP}, {action: Allow, protocol: TCP}]
        """)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 22, false)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 80, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 17, port: 80, false, "only Log rules matched: the tier denies")
        let why = e.explain(endpoint: "shop/web", direction: .ingress, peer: IPv4Address("10.0.0.2")!, proto: 6, port: 80).why
        XCTAssertTrue(why.contains("logged"), why)
    }

    func testNetsNotNetsPortsNotPortsAndRanges() throws {
        let e = try evaluator("""
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: ranges, namespace: shop}
        spec:
          selector: "app == 'web'"
          ingress:
          - action: Allow
            protocol: TCP
            source: {nets: [10.0.0.0/24, 172.16.0.0/12], notNets: [10.0.0.3/32, 172.16.5.0/24]}
            destination: {ports: ['8000:8100', 443], notPorts: [8050, '8090:8095']}
          - action: Allow
            protocol: UDP
            destination: {notPorts: ['1:1023']}
        """)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 8000, true)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 8100, true)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 443, true)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 8101, false)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 7999, false)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 8050, false)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 8092, false)
        check(e, "shop/web", .ingress, "10.0.0.3", port: 8000, false)
        check(e, "shop/web", .ingress, "172.20.0.1", port: 8000, true)
        check(e, "shop/web", .ingress, "172.16.5.1", port: 8000, false)
        check(e, "shop/web", .ingress, "192.168.0.1", port: 8000, false)
        check(e, "shop/web", .ingress, "192.168.0.1", proto: 17, port: 1024, true)
        check(e, "shop/web", .ingress, "192.168.0.1", proto: 17, port: 53, false)
        check(e, "shop/web", .ingress, "192.168.0.1", proto: 132, port: 2000, false)
    }

    func testPortRulesNeedAPortProtocol() throws {
        let e = try evaluator("""
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: ports, namespace: shop}
        spec:
          selector: "app == 'web'"
          ingress: [{action: Deny, protocol: 6, destination: {notPorts: [80]}}, {action: Allow, notProtocol: UDP}]
        """)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 81, false)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 80, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 132, port: 81, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 47, port: 0, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 17, port: 81, false)
        // Whatever policy says, a workload sends no tunnel packets; it may receive them.
        check(e, "shop/client", .egress, "10.0.0.1", proto: 4, port: 0, false)
        check(e, "shop/client", .egress, "10.0.0.1", proto: 17, port: 4789, false)
        check(e, "shop/client", .egress, "10.0.0.1", proto: 17, port: 4790, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 4, port: 0, true)
        // An ICMP error on its own is never a flow policy can open.
        check(e, "shop/client", .ingress, "10.0.0.1", proto: 1, port: 3 << 8 | 4, false)
        check(e, "shop/client", .ingress, "10.0.0.1", proto: 1, port: 8 << 8, true)
    }

    func testICMPTypeAndCode() throws {
        let e = try evaluator("""
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: icmp, namespace: shop}
        spec:
          selector: "app == 'web'"
          ingress:
          - {action: Allow, protocol: ICMP, icmp: {type: 8}}
          - {action: Allow, protocol: ICMP, icmp: {type: 9, code: 4}}
          - {action: Allow, protocol: ICMP, icmp: {type: 3, code: 4}}
          egress:
          - {action: Allow, protocol: ICMP, notICMP: {type: 10}}
          - {action: Allow, protocol: ICMP, notICMP: {type: 10, code: 1}}
        """)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 1, port: 8 << 8, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 1, port: 8 << 8 | 7, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 1, port: 0, false)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 1, port: 9 << 8 | 4, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 1, port: 9 << 8 | 1, false)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 1, port: 3 << 8 | 4, false, "an error never opens a flow, whatever the rules")
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 6, port: 8 << 8, false)
        // notICMP excludes only the matching type/code.
        check(e, "shop/web", .egress, "10.0.0.2", proto: 1, port: 0, true)
        check(e, "shop/web", .egress, "10.0.0.2", proto: 1, port: 10 << 8 | 2, true, "type 10 code 2 passes the second rule")
        check(e, "shop/web", .egress, "10.0.0.2", proto: 1, port: 10 << 8 | 1, false, "excluded by both rules")
        check(e, "shop/web", .egress, "10.0.0.2", proto: 6, port: 80, false)
    }

    func testNotSelectorIsScopedLikeTheSelector() throws {
        let e = try evaluator("""
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: not-clients, namespace: shop}
        spec:
          selector: "app == 'web'"
          ingress: [{action: Allow, source: {notSelector: "app == 'client'"}}]
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: not-partners}
        spec:
          selector: "app == 'client'"
          egress: [{action: Allow, destination: {notSelector: "kind == 'partner'"}}]
        """)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 80, false)
        check(e, "shop/web", .ingress, "10.0.0.3", port: 80, true, "other namespace: not selected by the notSelector")
        check(e, "shop/web", .ingress, "8.8.8.8", port: 80, true)
        check(e, "shop/client", .egress, "192.0.2.1", port: 80, false)
        check(e, "shop/client", .egress, "198.51.100.1", port: 80, false)
        check(e, "shop/client", .egress, "203.0.113.1", port: 80, true)
    }

    func testNetworkSetSelection() throws {
        let e = try evaluator("""
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: local-partners, namespace: shop}
        spec:
          selector: "app == 'web'"
          ingress: [{action: Allow, protocol: TCP, destination: {ports: [1]}, source: {selector: "kind == 'partner'"}}]
        ---
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: global-partners}
        spec:
          selector: "app == 'web'"
          ingress:
          - {action: Allow, protocol: TCP, destination: {ports: [2]}, source: {namespaceSelector: global(), selector: "kind == 'partner'"}}
          - {action: Allow, protocol: TCP, destination: {ports: [3]}, source: {namespaceSelector: "team == 'a'", selector: "kind == 'partner'"}}
          - {action: Allow, protocol: TCP, destination: {ports: [4]}, source: {selector: "kind == 'partner'"}}
          - {action: Allow, protocol: TCP, destination: {ports: [5]}, source: {namespaceSelector: "team == 'b'"}}
          - {action: Allow, protocol: TCP, destination: {ports: [6]}, source: {namespaceSelector: all(), selector: "kind == 'partner'"}}
          - {action: Allow, protocol: TCP, destination: {ports: [7]}, source: {namespaceSelector: "!all()", selector: "kind == 'partner'"}}
        """)
        // A namespaced policy's selector sees the namespace's network sets only.
        check(e, "shop/web", .ingress, "192.0.2.5", port: 1, true)
        check(e, "shop/web", .ingress, "198.51.100.5", port: 1, false)
        // global(): global network sets only.
        check(e, "shop/web", .ingress, "198.51.100.5", port: 2, true)
        check(e, "shop/web", .ingress, "192.0.2.5", port: 2, false)
        // A namespace selector: sets of the selected namespaces.
        check(e, "shop/web", .ingress, "192.0.2.5", port: 3, true)
        check(e, "shop/web", .ingress, "198.51.100.5", port: 3, false)
        // A global policy without namespaceSelector: every set.
        check(e, "shop/web", .ingress, "192.0.2.5", port: 4, true)
        check(e, "shop/web", .ingress, "198.51.100.5", port: 4, true)
        check(e, "shop/web", .ingress, "203.0.113.5", port: 4, false)
        // Namespace selector alone: pods of the namespace, not other sets.
        check(e, "shop/web", .ingress, "10.0.0.3", port: 5, true)
        check(e, "shop/web", .ingress, "192.0.2.5", port: 5, false)
        // all(): what is namespaced, so no global set (Calico rewrites it
        // to has(projectcalico.org/namespace)); !all(): global sets only.
        check(e, "shop/web", .ingress, "192.0.2.5", port: 6, true)
        check(e, "shop/web", .ingress, "198.51.100.5", port: 6, false)
        check(e, "shop/web", .ingress, "198.51.100.5", port: 7, true)
        check(e, "shop/web", .ingress, "192.0.2.5", port: 7, false)
    }

    func testIPv6RulesNeverMatch() throws {
        let e = try evaluator("""
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: v6, namespace: shop}
        spec:
          selector: "app == 'web'"
          ingress: [{action: Deny, ipVersion: 6}, {action: Allow, ipVersion: 4, protocol: TCP}]
        """)
        check(e, "shop/web", .ingress, "10.0.0.2", port: 80, true)
        check(e, "shop/web", .ingress, "10.0.0.2", proto: 17, port: 80, false)
    }

    func testLocalSideServiceAccountsAndAppliesTo() throws {
        let e = try evaluator("""
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: robots}
        spec:
          selector: "projectcalico.org/orchestrator == 'k8s'"
          serviceAccountSelector: "projectcalico.org/name == 'robot'"
          egress:
          - {action: Allow, protocol: TCP, source: {selector: "app == 'web'"}}
          - {action: Allow, protocol: UDP, source: {selector: "projectcalico.org/serviceaccount == 'robot'"}}
          ingress:
          - {action: Allow, source: {serviceAccounts: {names: [default]}}}
        """)
        // Only the robot pod is selected.
        check(e, "shop/web", .egress, "8.8.8.8", port: 80, true)
        check(e, "shop/client", .egress, "8.8.8.8", port: 80, false, "the local side is the client, not web")
        check(e, "shop/client", .egress, "8.8.8.8", proto: 17, port: 80, true)
        check(e, "shop/client", .ingress, "10.0.0.1", port: 80, true)
        check(e, "shop/client", .ingress, "8.8.8.8", port: 80, false)
    }
}
