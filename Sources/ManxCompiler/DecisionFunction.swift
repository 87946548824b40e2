import ManxModel

/// The verdicts of one rule program for one class of peers: a verdict for
/// protocols no rule names, and port segments for those that are named.
struct DecisionFunction: Hashable {
    var other: Decision
    var segments: [UInt8: [(range: ClosedRange<UInt32>, decision: Decision)]]

    static func == (a: DecisionFunction, b: DecisionFunction) -> Bool {
        a.other == b.other && a.segments.keys == b.segments.keys && a.segments.allSatisfy { key, segs in
            let other = b.segments[key]!
            return segs.count == other.count && zip(segs, other).allSatisfy { $0.range == $1.range && $0.decision == $1.decision }
        }
    }

    func hash(into h: inout Hasher) {
        h.combine(other)
        for key in segments.keys.sorted() {
            h.combine(key)
            for s in segments[key]! { h.combine(s.range.lowerBound); h.combine(s.range.upperBound); h.combine(s.decision) }
        }
    }

    /// True when every cell decides `d`.
    func isConstant(_ d: Decision) -> Bool {
        other == d && segments.values.allSatisfy { $0.allSatisfy { $0.decision == d } }
    }

    /// Evaluates a program's tiers for a class of peers with named ports
    /// `peerPorts`, given the rules that can match such a peer, per tier in
    /// order (`ProgramIndex.candidates`): the cost follows the rules that
    /// concern a peer, not every rule of the program.
    static func evaluate(_ tiers: [TierProgram], candidates: [[ProgramRule]], peerPorts: [NamedPort]) -> DecisionFunction {
        var protos = Set<IPProtocol>()
        for tier in candidates {
            for r in tier {
                if let p = r.proto { protos.insert(p) }
                if let p = r.notProto { protos.insert(p) }
            }
        }
        let other = evaluate(tiers, candidates, proto: nil, peerPorts: peerPorts)
        var segments: [UInt8: [(ClosedRange<UInt32>, Decision)]] = [:]
        for p in protos { segments[p.number] = evaluate(tiers, candidates, proto: p, peerPorts: peerPorts) }
        return DecisionFunction(other: other[0].1, segments: segments)
    }

    /// The port (or ICMP type/code) space of a protocol, and whether port
    /// and ICMP conditions can match it at all.
    private static func space(_ proto: IPProtocol?) -> (upper: UInt32, ports: Bool, icmp: Bool) {
        guard let proto else { return (0, false, false) }
        if proto.hasPorts { return (0xffff, true, false) }
        if proto == .icmp { return (0xffff, false, true) }
        return (0, false, false)
    }

    /// The cells of `proto`'s space a rule matches (nil: none).
    private static func ruleSet(_ r: ProgramRule, proto: IPProtocol?, peerPorts: [NamedPort]) -> PortSet? {
        let sp = space(proto)
        func resolve(_ t: PortTerms) -> PortSet {
            var ranges = t.ranges
            for name in t.names {
                for p in peerPorts where p.name == name && p.proto == proto { ranges.append(UInt32(p.port)...UInt32(p.port)) }
            }
            return PortSet(ranges: ranges)
        }
        var set = PortSet(ranges: [0...sp.upper])
        if r.ports != nil || r.notPorts != nil {
            guard sp.ports else { return nil }
            if let ports = r.ports { set = resolve(ports) }
            if let notPorts = r.notPorts { set = set.subtracting(resolve(notPorts)) }
        }
        if r.icmp != nil || r.notICMP != nil {
            guard sp.icmp else { return nil }
            if let icmp = r.icmp { set = icmp }
            if let notICMP = r.notICMP { set = set.subtracting(notICMP) }
        }
        return set.isEmpty ? nil : set
    }

    /// Calico evaluation over the cells of one protocol: tiers in order, the
    /// first Allow/Deny/Pass rule of a tier wins a cell, Log marks it, the
    /// tier default takes what is left; passed cells fall to the next tier.
    /// The last tier (the profiles) passes nothing.
    private static func evaluate(_ tiers: [TierProgram], _ candidates: [[ProgramRule]], proto: IPProtocol?,
                                 peerPorts: [NamedPort]) -> [(ClosedRange<UInt32>, Decision)] {
        let upper = space(proto).upper
        var tierRules: [[(ProgramRule, PortSet)]] = []
        var boundaries: Set<UInt32> = [0]
        for rules in candidates {
            var list: [(ProgramRule, PortSet)] = []
            for r in rules where r.protoMatches(proto) {
                guard let set = ruleSet(r, proto: proto, peerPorts: peerPorts) else { continue }
                for range in set.ranges {
                    boundaries.insert(range.lowerBound)
                    if range.upperBound < upper { boundaries.insert(range.upperBound + 1) }
                }
                list.append((r, set))
            }
            tierRules.append(list)
        }
        let layout = FirstFitCells(boundaries: boundaries, upper: upper)
        var final = [Decision?](repeating: nil, count: layout.count)
        var logged = [Bool](repeating: false, count: layout.count)
        for (tier, rules) in zip(tiers, tierRules) {
            var cells = layout
            for i in 0..<final.count where final[i] != nil { cells.take(PortSet(ranges: [layout.range(of: i, upper: upper)])) { _ in } }
            for (rule, set) in rules {
                switch rule.action {
                case .log:
                    var probe = cells
                    probe.take(set) { logged[$0] = true }
                case .allow, .deny:
                    let verdict: Verdict = rule.action == .allow ? .allow : .deny
                    cells.take(set) { final[$0] = Decision(verdict, rule.id, log: logged[$0]) }
                case .pass:
                    cells.take(set) { _ in }
                }
            }
            if !tier.defaultPass {
                cells.takeRest { final[$0] = Decision(.deny, tier.defaultRuleID, log: logged[$0], byDefault: true) }
            }
        }
        var segments: [(ClosedRange<UInt32>, Decision)] = []
        for i in 0..<layout.count {
            let d = final[i] ?? Decision(.deny, ReservedRule.defaultDeny, log: logged[i], byDefault: true)
            let r = layout.range(of: i, upper: upper)
            if let last = segments.last, last.1 == d, last.0.upperBound + 1 == r.lowerBound {
                segments[segments.count - 1].0 = last.0.lowerBound...r.upperBound
            } else {
                segments.append((r, d))
            }
        }
        return segments
    }
}

/// What a decision function depends on: the rules that can match a peer
/// class, each tier's default, and the peer's named ports. Programs that
/// differ elsewhere (a policy changed, other peers) share the functions of
/// equal inputs.
struct DecisionInputs: Hashable {
    var defaults: [TierDefault]
    var candidates: [[ProgramRule]]
    var peerPorts: [NamedPort]

    struct TierDefault: Hashable {
        var pass: Bool
        var ruleID: UInt32
    }
}

/// A program's rules grouped by the matcher they need, per tier, so a peer
/// class visits only the rules that can match it.
struct ProgramIndex {
    let program: RuleProgram
    private let unconditional: [[Int]]
    private let byMatcher: [[Int: [Int]]]

    init(_ program: RuleProgram) {
        self.program = program
        var unconditional: [[Int]] = []
        var byMatcher: [[Int: [Int]]] = []
        for tier in program.tiers {
            var always: [Int] = []
            var grouped: [Int: [Int]] = [:]
            for (i, r) in tier.rules.enumerated() {
                if let m = r.matcher { grouped[m, default: []].append(i) } else { always.append(i) }
            }
            unconditional.append(always)
            byMatcher.append(grouped)
        }
        self.unconditional = unconditional
        self.byMatcher = byMatcher
    }

    /// Per tier, in rule order, the rules whose peer condition `matched` meets.
    func candidates(matched: [Int]) -> [[ProgramRule]] {
        program.tiers.indices.map { t in
            var indices = unconditional[t]
            for m in matched { indices += byMatcher[t][m] ?? [] }
            indices.sort()
            return indices.map { program.tiers[t].rules[$0] }
        }
    }
}
