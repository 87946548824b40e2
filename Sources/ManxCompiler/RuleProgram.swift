import ManxModel

/// The destination-port condition of a rule: ranges, plus names that are
/// resolved against the peer (egress) per identity. Ingress names are
/// resolved against the local endpoint before this is built.
struct PortTerms: Hashable {
    var ranges: [ClosedRange<UInt32>]
    var names: [String]
}

/// A rule as one endpoint's program sees it: local-side conditions already
/// checked, peer side reduced to a matcher index.
struct ProgramRule: Hashable {
    var id: UInt32
    var action: RuleAction
    var proto: IPProtocol? = nil
    var notProto: IPProtocol? = nil
    /// Index into the compiler's matcher list; nil matches any peer.
    var matcher: Int? = nil
    var ports: PortTerms? = nil
    var notPorts: PortTerms? = nil
    var icmp: PortSet? = nil
    var notICMP: PortSet? = nil

    func protoMatches(_ p: IPProtocol?) -> Bool {
        if let proto, proto != p { return false }
        if let notProto, notProto == p { return false }
        return true
    }
}

struct TierProgram: Hashable {
    var name: String
    var defaultPass: Bool
    var defaultRuleID: UInt32
    var rules: [ProgramRule]
}

/// Everything that decides one endpoint's verdicts in one direction: its
/// tiers, the last being its profiles. Equal programs share one rule set.
struct RuleProgram: Hashable {
    var tiers: [TierProgram]

    var matchers: Set<Int> { Set(tiers.flatMap { $0.rules.compactMap(\.matcher) }) }
    var usesPeerPortNames: Bool {
        tiers.contains { $0.rules.contains { !($0.ports?.names.isEmpty ?? true) || !($0.notPorts?.names.isEmpty ?? true) } }
    }
}

/// ICMP type/code matches as a set over the 16-bit type<<8|code space.
func icmpSet(_ m: ICMPMatch) -> PortSet {
    guard let type = m.type.map(UInt32.init) else { return .full }
    if let code = m.code.map(UInt32.init) { return PortSet(ranges: [(type << 8 | code)...(type << 8 | code)]) }
    return PortSet(ranges: [(type << 8)...(type << 8 | 0xff)])
}
