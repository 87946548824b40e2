import Foundation
@testable import ManxCompiler
import ManxConformance
@testable import ManxNodeState
import XCTest

/// The metadata file written with encoded rules and identities reused from
/// earlier writes reads back as what was written, write after write.
final class MetadataTests: XCTestCase {
    func testCachedEncodingReadsBackWhatWasWritten() throws {
        var m = NodeMetadata()
        m.generation = 7
        m.appliedAt = Date(timeIntervalSince1970: 1_800_000_000)
        m.error = #"a value holding "rules":[] and "identities":[] itself"#
        m.endpoints = [.init(workload: "shop/web", interface: "veth1", ip: "10.0.0.1", identity: 300, ingressRuleset: 4, egressRuleset: 0)]
        for id in UInt32(16)..<UInt32(60) {
            m.rules[id] = RuleInfo(policy: "shop/p\(id)", tier: "default", direction: "ingress", index: Int(id % 3), action: "allow",
                                   summary: "from \"quoted\" \\ \(id)")
        }
        for id in UInt32(256)..<UInt32(270) { m.identities[id] = IdentityInfo(members: ["shop/pod\(id)", "10.1.\(id % 250).0/24"]) }

        let cache = MetadataCache()
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        for step in 0..<4 {
            let decoded = try decoder.decode(NodeMetadata.self, from: try cache.encode(m))
            let plain = try decoder.decode(NodeMetadata.self, from: try NodeMetadata.encoder().encode(m))
            for read in [decoded, plain] {
                XCTAssertEqual(read.rules, m.rules, "step \(step)")
                XCTAssertEqual(read.identities, m.identities, "step \(step)")
                XCTAssertEqual(read.error, m.error, "step \(step)")
                XCTAssertEqual(read.generation, m.generation, "step \(step)")
                XCTAssertEqual(read.appliedAt, m.appliedAt, "step \(step)")
                XCTAssertEqual(read.endpoints.map(\.workload), m.endpoints.map(\.workload), "step \(step)")
            }
            // The next write: a rule gone, one new, an identity's members changed.
            m.rules[UInt32(16 + step)] = nil
            m.rules[UInt32(100 + step)] = RuleInfo(policy: "shop/new\(step)", tier: "default", direction: "egress", index: 0, action: "deny", summary: "new")
            m.identities[256]?.members.append("shop/joined\(step)")
            m.generation += 1
        }
        m.rules = [:]
        m.identities = [:]
        let empty = try decoder.decode(NodeMetadata.self, from: try cache.encode(m))
        XCTAssertTrue(empty.rules.isEmpty && empty.identities.isEmpty)
    }

    /// The endpoint status directory holds exactly the endpoints published
    /// last: a first publication removes what an earlier daemon left, a
    /// change rewrites one file, an endpoint gone loses its file.
    func testEndpointStatusFollowsThePublishedEndpoints() throws {
        let root = try makeScratchDirectory("mxst")
        defer { try? FileManager.default.removeItem(atPath: root) }
        var paths = NodePaths(node: "")
        paths.stateDirectory = root
        try FileManager.default.createDirectory(atPath: paths.endpointStatusDirectory, withIntermediateDirectories: true)
        try Data("stale".utf8).write(to: URL(fileURLWithPath: paths.endpointStatusDirectory + "/old_pod"))

        let web = EndpointStatus(workload: "shop/web", interface: "mx1", ifindex: 7, ip: "10.0.0.1")
        let db = EndpointStatus(workload: "shop/db-0", interface: "mx2", ifindex: 8, ip: "10.0.0.2")
        let publisher = EndpointStatusPublisher(paths: paths)
        try publisher.publish([web, db])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: paths.endpointStatusDirectory).sorted(), ["shop_db-0", "shop_web"])
        XCTAssertEqual(EndpointStatus.read(paths, workload: "shop/web"), web)

        var moved = web
        moved.ifindex = 9
        try publisher.publish([moved])
        XCTAssertEqual(EndpointStatus.read(paths, workload: "shop/web"), moved)
        XCTAssertNil(EndpointStatus.read(paths, workload: "shop/db-0"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: paths.endpointStatusDirectory), ["shop_web"])
    }
}
