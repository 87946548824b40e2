import ManxModel
import ManxRouting
import XCTest

/// Which remote block goes where, and how: routes from IPAM blocks, the
/// pool's encapsulation mode, borrowed addresses, and the pod MTU.
final class RoutingPlanTests: XCTestCase {
    typealias M = NetworkingModelTests

    /// Nodes n1 and n2 share 10.99.0.0/24; n3 is on 10.99.1.0/24.
    static let nodes = [
        M.node("{bgp: {ipv4Address: 10.99.0.1/24}}", name: "n1"),
        M.node("{bgp: {ipv4Address: 10.99.0.2/24}}", name: "n2"),
        M.node("{bgp: {ipv4Address: 10.99.1.3/24}}", name: "n3"),
    ]

    static func blocks(pool: String = "pool-a") -> [String] {
        [M.block("{cidr: 10.10.0.0/26, pool: \(pool), node: n1}", name: "10-10-0-0-26"),
         M.block("{cidr: 10.10.0.64/26, pool: \(pool), node: n2}", name: "10-10-0-64-26"),
         M.block("{cidr: 10.10.0.128/26, pool: \(pool), node: n3, allocations: [{address: 10.10.0.130, handle: h, workload: x/a, node: n1}]}",
                 name: "10-10-0-128-26")]
    }

    func plan(_ docs: [String], node: String = "n1") throws -> RoutingPlan {
        let set = try ResourceSet.decode(files: [("net.yaml", docs.joined(separator: "---\n"))])
        return RoutingPlan(nodeName: node, pools: Array(set.ipPools.values), nodes: Array(set.nodes.values),
                           blocks: Array(set.ipamBlocks.values), felix: Array(set.felixConfigurations.values))
    }

    func routes(_ p: RoutingPlan) -> [String] {
        p.routes.map { "\($0.cidr) \($0.nextHop?.description ?? "local") \($0.encapsulation.rawValue)" }
    }

    func testAlwaysEncapsulatesTowardsEveryOtherNode() throws {
        let p = try plan([M.pool("{cidr: 10.10.0.0/16, ipipMode: Always}")] + Self.nodes + Self.blocks())
        XCTAssertEqual(routes(p), ["10.10.0.64/26 10.99.0.2 ipip", "10.10.0.128/26 10.99.1.3 ipip",
                                   "10.10.0.130/32 local none"],
                       "own block not routed; the address n1 borrowed from n3's block is local and hides n3's route")
        XCTAssertEqual(p.podMTU(underlayMTU: 1500), 1480)
        // On n3 the borrowed address points back at n1.
        XCTAssertTrue(routes(try plan([M.pool("{cidr: 10.10.0.0/16, ipipMode: Always}")] + Self.nodes + Self.blocks(), node: "n3"))
            .contains("10.10.0.130/32 10.99.0.1 ipip"))
    }

    func testCrossSubnetEncapsulatesOnlyTowardsOtherSubnets() throws {
        let p = try plan([M.pool("{cidr: 10.10.0.0/16, vxlanMode: CrossSubnet}")] + Self.nodes + Self.blocks())
        XCTAssertEqual(routes(p), ["10.10.0.64/26 10.99.0.2 none", "10.10.0.128/26 10.99.1.3 vxlan", "10.10.0.130/32 local none"])
        XCTAssertEqual(p.podMTU(underlayMTU: 1500), 1450)
    }

    func testNeverRoutesNativelyWithTheFullMTU() throws {
        let p = try plan([M.pool("{cidr: 10.10.0.0/16}")] + Self.nodes + Self.blocks())
        XCTAssertEqual(routes(p), ["10.10.0.64/26 10.99.0.2 none", "10.10.0.128/26 10.99.1.3 none", "10.10.0.130/32 local none"])
        XCTAssertEqual(p.podMTU(underlayMTU: 1500), 1500)
    }

    func testFelixMTUAndPerNodeOverride() throws {
        let docs = [M.pool("{cidr: 10.10.0.0/16, vxlanMode: Always}"), M.felix("{vxlanMTU: 1400, ipipMTU: 1300}"),
                    M.felix("{vxlanMTU: 1350}", name: "node.n2")] + Self.nodes + Self.blocks()
        XCTAssertEqual(try plan(docs).podMTU(underlayMTU: 1500), 1400)
        XCTAssertEqual(try plan(docs, node: "n2").podMTU(underlayMTU: 1500), 1350)
        XCTAssertEqual(try plan(docs).podMTU(underlayMTU: 9000), 1400, "a configured MTU wins over the derived one")
    }

    /// A disabled pool gives no new addresses; its pods keep NAT.
    func testNATOutgoingAndDisabledPools() throws {
        let p = try plan([M.pool("{cidr: 10.10.0.0/16, natOutgoing: true}"),
                          M.pool("{cidr: 10.30.0.0/16, natOutgoing: true, disabled: true}", name: "pool-off"),
                          M.pool("{cidr: 10.40.0.0/16}", name: "pool-b")] + Self.nodes + Self.blocks())
        XCTAssertEqual(p.pools.map(\.description), ["10.10.0.0/16", "10.30.0.0/16", "10.40.0.0/16"])
        XCTAssertEqual(p.natOutgoingPools.map(\.description), ["10.10.0.0/16", "10.30.0.0/16"])
    }

    func testNoNodeResourceMeansNoRouting() throws {
        let p = try plan([M.pool("{cidr: 10.10.0.0/16, ipipMode: Always}")] + Self.blocks(), node: "n9")
        XCTAssertNil(p.node)
        XCTAssertEqual(p, RoutingPlan())
    }
}
