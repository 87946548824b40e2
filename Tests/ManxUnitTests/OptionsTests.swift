import ManxOptions
import XCTest

/// The dataplane names every command shares; a wrong one is refused.
final class OptionsTests: XCTestCase {
    func testDataplaneListsParseOrAreRefusedWhole() {
        XCTAssertEqual(DataplaneList(argument: "bpf,iptables,iptables-legacy")?.choices, [.bpf, .iptables, .iptablesLegacy])
        XCTAssertEqual(DataplaneList(argument: "iptables")?.choices, [.iptables])
        for bad in ["", "bpf,", "bpf,nft", "legacy", "BPF"] { XCTAssertNil(DataplaneList(argument: bad), bad) }
        XCTAssertEqual(DataplaneChoice.iptablesLegacy.daemonArguments, ["--dataplane", "iptables-legacy"])
    }
}
