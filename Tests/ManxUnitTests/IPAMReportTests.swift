import ManxIPAM
import ManxModel
import XCTest

/// `bpfctl ipam show` and `check` from a datastore's pools, blocks and endpoints.
final class IPAMReportTests: XCTestCase {
    static func endpoint(_ pod: String, _ container: String, _ address: String) -> String {
        """
        apiVersion: projectcalico.org/v3
        kind: WorkloadEndpoint
        metadata: {name: n1-k8s-\(pod)-eth0, namespace: demo}
        spec: {node: n1, pod: \(pod), containerID: \(container), interfaceName: mx\(pod), ipNetworks: [\(address)/32]}
        """
    }

    static let resources = [
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: main}\nspec: {cidr: 10.10.0.0/24, blockSize: 26}",
        // Node n1's block: .1 and .2 in use, .3 held by a container long gone.
        """
        apiVersion: manx.io/v1
        kind: IPAMBlock
        metadata: {name: 10-10-0-0-26}
        spec:
          cidr: 10.10.0.0/26
          pool: main
          node: n1
          allocations:
          - {address: 10.10.0.1, handle: c1, workload: demo/a, node: n1}
          - {address: 10.10.0.2, handle: c2, workload: demo/b, node: n1}
          - {address: 10.10.0.3, handle: gone, workload: demo/old, node: n1}
        """,
        "apiVersion: manx.io/v1\nkind: IPAMBlock\nmetadata: {name: 10-10-0-64-26}\nspec: {cidr: 10.10.0.64/26, pool: main, node: n2, allocations: []}",
        // A block whose pool was deleted.
        "apiVersion: manx.io/v1\nkind: IPAMBlock\nmetadata: {name: 10-20-0-0-26}\nspec: {cidr: 10.20.0.0/26, pool: old, node: n2, allocations: []}",
        endpoint("a", "c1", "10.10.0.1"),
        // b's endpoint names another container than the one holding .2.
        endpoint("b", "c2new", "10.10.0.2"),
        // c's address is held by no one.
        endpoint("c", "c3", "10.10.0.9"),
    ].joined(separator: "\n---\n")

    func testUsageByPoolBlockAndNode() throws {
        let report = IPAMReport(try ResourceSet.decode(files: [("r.yaml", Self.resources)]))
        XCTAssertEqual(report.pools.map { [$0.name, "\($0.blocks)", "\($0.allocated)", "\($0.capacity)"] }, [["main", "2", "3", "254"]])
        // The pool's network address is not handed out: 63 in its first block.
        XCTAssertEqual(report.blocks.map { [$0.cidr!, $0.node!, "\($0.allocated)", "\($0.capacity)"] },
                       [["10.10.0.0/26", "n1", "3", "63"], ["10.10.0.64/26", "n2", "0", "64"], ["10.20.0.0/26", "n2", "0", "64"]])
        XCTAssertEqual(report.nodes.map { [$0.name, "\($0.blocks)", "\($0.allocated)"] }, [["n1", "1", "3"], ["n2", "2", "0"]])
    }

    func testCheckFindsEveryDisagreementBothWays() throws {
        let report = IPAMReport(try ResourceSet.decode(files: [("r.yaml", Self.resources)]))
        XCTAssertEqual(report.problems.map { "\($0.kind.rawValue) \($0.address) \($0.handle ?? "")" }, [
            "blockWithoutPool 10.20.0.0/26 ",
            "allocationWithoutEndpoint 10.10.0.2 c2",
            "allocationWithoutEndpoint 10.10.0.3 gone",
            "endpointWithoutAllocation 10.10.0.9 c3",
        ])
        XCTAssertTrue(report.problems[1].detail.contains("WorkloadEndpoint demo/n1-k8s-b-eth0 with it is container c2new's"), report.problems[1].detail)
        // Consistent: nothing to report.
        let fixed = Self.resources.components(separatedBy: "\n---\n").filter { !$0.contains("10-20-0-0") && !$0.contains("c3,") }
            .joined(separator: "\n---\n")
            .replacingOccurrences(of: "  - {address: 10.10.0.3, handle: gone, workload: demo/old, node: n1}\n", with: "")
            .replacingOccurrences(of: "containerID: c2new", with: "containerID: c2")
        XCTAssertEqual(IPAMReport(try ResourceSet.decode(files: [("r.yaml", fixed)])).problems, [])
    }
}
