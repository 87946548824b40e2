import Foundation
@testable import ManxCompiler
@testable import ManxDataplane
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
}
