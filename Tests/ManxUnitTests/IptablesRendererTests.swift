@testable import ManxCompiler
@testable import ManxIptables
import ManxModel
import XCTest

final class IptablesRendererTests: XCTestCase {
    func testMostSpecificEntriesComeFirstAndDenyDrops() {
        let entries = [
            TableEntry(identity: nil, proto: nil, decision: Decision(.deny, 20, byDefault: true)),
            TableEntry(identity: 17, proto: nil, decision: Decision(.allow, 21)),
            TableEntry(identity: 17, proto: 6, port: 80, portBits: 16, decision: Decision(.deny, 22)),
            TableEntry(identity: 18, proto: 6, port: 1024, portBits: 6, decision: Decision(.allow, 23)),
        ]
        var ids = Set<UInt32>()
        let rules = IptablesRenderer.rulesetChain(entries, ingress: true, names: [17: "manx-id-17", 18: "manx-id-18"], identities: &ids)
        XCTAssertEqual(rules, [
            "-m set --match-set manx-id-17 src -p tcp --dport 80 -m comment --comment \"rule 22\" -j DROP",
            "-m set --match-set manx-id-18 src -p tcp --dport 1024:2047 -m comment --comment \"rule 23\" -j RETURN",
            "-m set --match-set manx-id-17 src -m comment --comment \"rule 21\" -j RETURN",
            "-m comment --comment \"rule 20\" -j DROP",
        ])
        XCTAssertEqual(ids, [17, 18])
    }

    func testProtocolMatches() {
        XCTAssertEqual(IptablesRenderer.protocolMatches(proto: 1, port: 0x0800, bits: 16), ["-p icmp --icmp-type 8/0"])
        XCTAssertEqual(IptablesRenderer.protocolMatches(proto: 1, port: 0x0300, bits: 8), ["-p icmp --icmp-type 3"])
        XCTAssertEqual(IptablesRenderer.protocolMatches(proto: 1, port: 0x0200, bits: 7), ["-p icmp --icmp-type 2", "-p icmp --icmp-type 3"])
        XCTAssertEqual(IptablesRenderer.protocolMatches(proto: 132, port: 0, bits: 0), ["-p sctp"])
        XCTAssertEqual(IptablesRenderer.protocolMatches(proto: 47, port: 0, bits: 16), ["-p 47"])
    }

    func testSetNamesChangeWithTheirMembers() {
        let a = IptablesRenderer.setName(17, members: ["10.0.0.1/32"])
        XCTAssertTrue(a.hasPrefix("manx-id-17-"))
        XCTAssertLessThanOrEqual(IptablesRenderer.setName(UInt32.max, members: []).count, 31)
        XCTAssertEqual(a, IptablesRenderer.setName(17, members: ["10.0.0.1/32"]))
        XCTAssertNotEqual(a, IptablesRenderer.setName(17, members: ["10.0.0.1/32", "10.0.0.2/32"]))
    }

    func testIdentitySetsUseNomatchForNestedRegions() {
        var state = CompiledState()
        state.ipcache = [
            IPCacheEntry(cidr: .any, identity: 2, localWorkload: false),
            IPCacheEntry(cidr: try! CIDR.parse("10.0.0.0/8").get(), identity: 17, localWorkload: false),
            IPCacheEntry(cidr: try! CIDR.parse("10.9.0.0/16").get(), identity: 2, localWorkload: false),
            IPCacheEntry(cidr: try! CIDR.parse("10.9.1.1/32").get(), identity: 17, localWorkload: false),
        ]
        let sets = IptablesRenderer.identitySets(state, used: [2, 17])
        XCTAssertEqual(sets[17], ["10.0.0.0/8", "10.9.0.0/16 nomatch", "10.9.1.1/32"])
        XCTAssertEqual(sets[2], ["0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/8 nomatch", "10.9.1.1/32 nomatch", "10.9.0.0/16", "10.9.1.1/32 nomatch"])
    }
}
