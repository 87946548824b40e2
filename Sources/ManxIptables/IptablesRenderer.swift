import ManxCompiler
import ManxModel

/// Renders compiled policy as iptables rules and ipsets, Calico-classic
/// style: an ipset per identity, a chain per rule set and direction, and a
/// dispatch chain on FORWARD that sends each workload's traffic through
/// them, after a conntrack shortcut for established flows. Traffic from a
/// workload to its node (INPUT) goes through the workload's egress policy
/// too; traffic the node sends to its workloads (OUTPUT) is never policed:
/// Kubernetes' node rule. Before anything else, a workload's packets must
/// carry its own source address (the kernel's conntrack would otherwise
/// take a forged packet for part of another pod's flow), and may not be
/// IPIP or VXLAN, as in Calico.
///
/// A rule set is an LPM table; its entries become rules ordered from the
/// most to the least specific prefix, so first-match in iptables gives the
/// same answer as the longest-prefix match in BPF. Identities become
/// hash:net sets that use `nomatch` for the more specific regions of other
/// identities, which gives hash:net the same longest-prefix semantics.
///
/// A set is named by its identity and a digest of its members, so a set
/// that chains in force refer to never changes: new members mean a new set,
/// which the new chains name, and chains and sets come into force together
/// in one iptables-restore transaction.
public enum IptablesRenderer {
    public static let dispatchChain = "manx-FORWARD"
    public static let inputChain = "manx-INPUT"
    public static let guardChain = "manx-from-wl"
    public static let chainPrefix = "manx-"
    public static let setPrefix = "manx-id-"
    public static let maxSetElements = 1 << 20

    public struct Rendered: Sendable, Equatable {
        /// `ipset restore` input creating each set under a temporary name.
        public var sets: [String: [String]]
        /// `iptables-restore --noflush` input for the filter table.
        public var chains: [String: [String]]
        public var ruleCount: Int { chains.values.reduce(0) { $0 + $1.count } }
    }

    public static func chainName(ruleset: UInt32, ingress: Bool) -> String { "\(chainPrefix)rs\(ruleset)-\(ingress ? "i" : "e")" }
    /// At most 27 characters (ipset allows 31).
    public static func setName(_ identity: UInt32, members: [String]) -> String {
        "\(setPrefix)\(identity)-\(Digest.sha256(members.joined(separator: "\n")).description.prefix(8))"
    }

    public static func render(_ state: CompiledState) -> Rendered {
        var chains: [String: [String]] = [:]
        var usedIdentities = Set<UInt32>()
        // Only identities the endpoints' rule sets name need members. One that
        // is a single plain CIDR is matched inline (-s/-d), as Calico does
        // for nets; only the others need a set.
        let programmed = Set(state.endpoints.flatMap { [$0.ingressRuleset, $0.egressRuleset] })
        let referenced = Set(programmed.flatMap { state.rulesets[$0] ?? [] }.compactMap(\.identity))
        let members = identitySets(state, used: referenced)
        let names = Dictionary(uniqueKeysWithValues: members.map { ($0.key, setName($0.key, members: $0.value)) })
        let inline: [UInt32: String] = members.compactMapValues { list in
            list.count == 1 && !list[0].contains("nomatch") ? list[0] : nil
        }
        let established = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        var egressFirst: [String] = [], ingressAfter: [String] = [], guardRules: [String] = []
        for ep in state.endpoints.sorted(by: { $0.interface < $1.interface }) {
            guardRules += [
                "-i \(ep.interface) ! -s \(ep.ip)/32 -m comment --comment \"spoofed source\" -j DROP",
                "-i \(ep.interface) -p 4 -m comment --comment \"IPIP from a workload\" -j DROP",
                "-i \(ep.interface) -p udp --dport 4789 -m comment --comment \"VXLAN from a workload\" -j DROP",
            ]
            // Pod egress is checked first (packets from its interface), then
            // the destination pod's ingress (packets to its interface).
            if ep.egressRuleset != 0 { egressFirst.append("-i \(ep.interface) -j \(chainName(ruleset: ep.egressRuleset, ingress: false))") }
            if ep.ingressRuleset != 0 { ingressAfter.append("-o \(ep.interface) -j \(chainName(ruleset: ep.ingressRuleset, ingress: true))") }
            for (id, ingress) in [(ep.ingressRuleset, true), (ep.egressRuleset, false)] where id != 0 {
                let name = chainName(ruleset: id, ingress: ingress)
                if chains[name] == nil, let entries = state.rulesets[id] {
                    chains[name] = rulesetChain(entries, ingress: ingress, inline: inline, names: names, identities: &usedIdentities)
                }
            }
        }
        chains[guardChain] = guardRules
        chains[dispatchChain] = ["-j \(guardChain)", established] + egressFirst + ingressAfter
        chains[inputChain] = ["-j \(guardChain)", established] + egressFirst
        return Rendered(sets: Dictionary(uniqueKeysWithValues: usedIdentities.map { (names[$0]!, members[$0]!) }), chains: chains)
    }

    /// Allowed packets RETURN to the dispatch chain (the other side's policy
    /// still applies); denied packets are dropped. Entries of equal
    /// specificity are disjoint; they are kept in rule order, as Calico's
    /// chains are, so a connection is checked against the rules before its own.
    static func rulesetChain(_ entries: [TableEntry], ingress: Bool, inline: [UInt32: String] = [:],
                             names: [UInt32: String], identities: inout Set<UInt32>) -> [String] {
        let sorted = entries.sorted { (specificity($1), $0.decision.ruleID) < (specificity($0), $1.decision.ruleID) }
        var rules: [String] = []
        let direction = ingress ? "src" : "dst"
        for e in sorted {
            var match = ""
            if let id = e.identity {
                if let cidr = inline[id] {
                    match += "\(ingress ? "-s" : "-d") \(cidr) "
                } else {
                    identities.insert(id)
                    match += "-m set --match-set \(names[id] ?? setName(id, members: [])) \(direction) "
                }
            }
            let target = e.decision.verdict == .allow ? "RETURN" : "DROP"
            let comment = "-m comment --comment \"rule \(e.decision.ruleID)\" "
            guard let proto = e.proto else {
                rules.append("\(match)\(comment)-j \(target)")
                continue
            }
            for protoMatch in protocolMatches(proto: proto, port: e.port, bits: e.portBits) {
                rules.append("\(match)\(protoMatch) \(comment)-j \(target)")
            }
        }
        return rules
    }

    static func specificity(_ e: TableEntry) -> Int {
        e.identity == nil ? 0 : (e.proto == nil ? 1 : 2 + e.portBits)
    }

    /// The iptables match for {proto, port prefix}: ports for TCP, UDP and
    /// SCTP, type/code for ICMP, protocol only otherwise.
    static func protocolMatches(proto: UInt8, port: UInt16, bits: Int) -> [String] {
        let lo = UInt32(port), hi = lo + (UInt32(1) << UInt32(16 - bits)) - 1
        switch proto {
        case 6, 17, 132:
            let name = proto == 6 ? "tcp" : proto == 17 ? "udp" : "sctp"
            return bits == 0 ? ["-p \(name)"] : ["-p \(name) --dport \(lo == hi ? "\(lo)" : "\(lo):\(hi)")"]
        case 136:
            return bits == 0 ? ["-p udplite"] : ["-p udplite -m multiport --dports \(lo == hi ? "\(lo)" : "\(lo):\(hi)")"]
        case 1:
            if bits == 0 { return ["-p icmp"] }
            if bits >= 16 { return ["-p icmp --icmp-type \(lo >> 8)/\(lo & 0xff)"] }
            if bits >= 8 { return ["-p icmp --icmp-type \(lo >> 8)"] }
            return (lo >> 8...hi >> 8).map { "-p icmp --icmp-type \($0)" }
        default:
            return ["-p \(proto)"]
        }
    }

    /// Each used identity's regions, plus `nomatch` for the more specific
    /// regions inside them that belong to other identities.
    static func identitySets(_ state: CompiledState, used: Set<UInt32>) -> [UInt32: [String]] {
        let regions = state.ipcache.sorted { ($0.cidr.address.value, $0.cidr.prefixLength) < ($1.cidr.address.value, $1.cidr.prefixLength) }
        var sets: [UInt32: [String]] = [:]
        for id in used { sets[id] = [] }
        for (i, r) in regions.enumerated() where used.contains(r.identity) {
            var members = hashNetPrefixes(r.cidr).map { $0 }
            // Regions nested in r follow it in (address, length) order.
            var j = i + 1
            while j < regions.count && r.cidr.contains(regions[j].cidr) {
                if regions[j].identity != r.identity {
                    members += hashNetPrefixes(regions[j].cidr).map { "\($0) nomatch" }
                }
                j += 1
            }
            sets[r.identity]! += members
        }
        return sets
    }

    /// hash:net cannot hold /0: split it into two /1s.
    static func hashNetPrefixes(_ cidr: CIDR) -> [String] {
        cidr.prefixLength == 0 ? ["0.0.0.0/1", "128.0.0.0/1"] : [cidr.description]
    }
}
