@testable import ManxCompiler
import ManxModel
import ManxReference
import XCTest

/// Containers of other CNI runtimes (podman, containerd): WorkloadEndpoints
/// of orchestrator `cni`, whose own labels and profiles decide policy. The
/// compiler and the reference evaluator must agree on every verdict.
final class CNIWorkloadTests: XCTestCase {
    static func endpoint(_ id: String, _ address: String, labels: String, profiles: String = "[podnet]") -> String {
        """
        apiVersion: projectcalico.org/v3
        kind: WorkloadEndpoint
        metadata:
          name: n1-cni-\(id)-eth0
          namespace: default
          labels: \(labels)
        spec: {node: n1, orchestrator: cni, workload: \(id), containerID: \(id), interfaceName: v\(id), ipNetworks: [\(address)/32], profiles: \(profiles)}
        """
    }

    static let profile = """
    apiVersion: projectcalico.org/v3
    kind: Profile
    metadata: {name: podnet}
    spec:
      labelsToApply: {podnet: ""}
      ingress: [{action: Allow, source: {selector: has(podnet)}}]
      egress: [{action: Allow}]
    """

    static let cluster = [
        endpoint("c1", "10.1.0.1", labels: "{role: server}"),
        endpoint("c2", "10.1.0.2", labels: "{role: client}"),
        endpoint("c3", "10.1.0.3", labels: "{}", profiles: "[elsewhere]"),
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: p, namespace: default, labels: {role: server}, annotations: {manx.io/interface: vp}}
        status: {podIP: 10.1.0.9}
        """,
    ].joined(separator: "\n---\n")

    func check(_ extra: String, _ cases: [(String, String, UInt16, Bool)], file: StaticString = #filePath, line: UInt = #line) throws {
        let resources = try ResourceSet.decode(files: [("c.yaml", Self.cluster + "\n---\n" + Self.profile), ("p.yaml", extra)])
        let state = PolicyCompiler().compile(resources)
        let reference = ReferenceEvaluator(resources)
        for (endpoint, peer, port, allowed) in cases {
            let (expected, why) = reference.explain(endpoint: endpoint, direction: .ingress, peer: IPv4Address(peer)!, proto: 6, port: port)
            XCTAssertEqual(expected, allowed, "reference: \(endpoint) from \(peer):\(port): \(why)", file: file, line: line)
            guard let ep = state.endpoint(endpoint) else { XCTFail("no endpoint \(endpoint)", file: file, line: line); continue }
            let verdict = state.decide(ruleset: ep.ingressRuleset, peer: IPv4Address(peer)!, proto: 6, port: port).verdict
            XCTAssertEqual(verdict == .allow, allowed, "compiler: \(endpoint) from \(peer):\(port)", file: file, line: line)
        }
    }

    func testProfilesDecideWithoutPolicyAndAMissingProfileDenies() throws {
        try check("", [
            ("default/c1", "10.1.0.2", 80, true), // same network: the profile's label
            ("default/c1", "10.1.0.9", 80, false), // a Kubernetes pod: not on the network
            ("default/c1", "192.0.2.1", 80, false),
            // Its only profile does not exist: no built-in allow, as a pod's kns. has.
            ("default/c3", "10.1.0.1", 80, false),
            ("default/p", "10.1.0.1", 80, true),
        ])
    }

    func testGlobalPolicySelectsContainersByTheirLabelsAndKubernetesPolicyDoesNot() throws {
        try check("""
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: servers}
        spec:
          selector: role == 'server' && projectcalico.org/orchestrator == 'cni'
          ingress: [{action: Allow, protocol: TCP, source: {selector: role == 'client'}, destination: {ports: [8080]}}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: deny-all, namespace: default}
        spec: {podSelector: {}, policyTypes: [Ingress]}
        """, [
            ("default/c1", "10.1.0.2", 8080, true),
            ("default/c1", "10.1.0.2", 8081, false),
            ("default/c2", "10.1.0.1", 8081, true), // not selected: its profile allows the network
            ("default/p", "10.1.0.2", 8080, false), // the Kubernetes policy isolates only the pod
        ])
    }

    func testEndpointFieldsFollowTheOrchestrator() throws {
        func errors(_ text: String) -> [String] {
            do { _ = try ResourceSet.decode(files: [("w.yaml", text)]); return [] } catch { return error.errors.map(\.description) }
        }
        let good = Self.endpoint("c1", "10.1.0.1", labels: "{role: server}")
        XCTAssertEqual(errors(good), [])
        let set = try ResourceSet.decode(files: [("w.yaml", good)])
        let wep = try XCTUnwrap(set.workloadEndpoints["default/n1-cni-c1-eth0"])
        XCTAssertEqual(wep.labels, ["role": "server"])
        XCTAssertEqual(wep.profiles, ["podnet"])
        // The YAML the CNI plugin writes decodes to the same endpoint.
        XCTAssertEqual(try ResourceSet.decode(files: [("w.yaml", wep.yaml)]).workloadEndpoints.values.first.map { [$0.labels, ["p": $0.profiles.joined()]] },
                       [wep.labels, ["p": "podnet"]])
        XCTAssertTrue(errors(good.replacingOccurrences(of: "workload: c1", with: "pod: c1")).contains {
            $0.contains("spec.workload: missing") }, "\(errors(good.replacingOccurrences(of: "workload: c1", with: "pod: c1")))")
        XCTAssertTrue(errors(good.replacingOccurrences(of: "orchestrator: cni", with: "orchestrator: mesos")).contains {
            $0.contains("orchestrator must be k8s or cni, got 'mesos'") })
        let k8s = good.replacingOccurrences(of: "orchestrator: cni, workload", with: "orchestrator: k8s, pod")
            .replacingOccurrences(of: "n1-cni-c1", with: "n1-k8s-c1")
        XCTAssertTrue(errors(k8s).contains { $0.contains("spec.profiles: a Kubernetes endpoint's profiles are its namespace's") }, "\(errors(k8s))")
    }
}
