import ManxModel

/// The ids the compiler hands out, each keyed by the SHA-256 of what it
/// stands for: an identity by the peer class it names, a rule id by the
/// rule, a rule set id by its table. An id is bound to one content for
/// good: it is never handed out again for anything else, even after its
/// content is gone, because `next` only grows. The dataplane keeps these
/// with the programmed state (in the kernel), so a restarted daemon gives
/// every content the id it had.
public struct Allocations: Sendable, Equatable {
    public enum Kind: UInt32, Sendable, CaseIterable, Comparable {
        case identity = 1, rule = 2, ruleset = 3
        public static func < (a: Kind, b: Kind) -> Bool { a.rawValue < b.rawValue }

        /// The first id the compiler may hand out.
        public var first: UInt32 {
            switch self {
            case .identity: return ReservedIdentity.first
            case .rule: return ReservedRule.first
            case .ruleset: return 1
            }
        }

        /// Ids from here up are reserved (rule set ids the kernel programs
        /// give meaning to: MANX_RULESET_NODE and below).
        public var limit: UInt32 { self == .ruleset ? ReservedRuleset.firstReserved : UInt32.max }
    }

    public struct Key: Hashable, Sendable, Comparable {
        public var kind: Kind
        public var digest: Digest
        public init(_ kind: Kind, _ digest: Digest) {
            self.kind = kind
            self.digest = digest
        }
        public static func < (a: Key, b: Key) -> Bool { (a.kind, a.digest) < (b.kind, b.digest) }
    }

    /// Live contents and their ids.
    public var ids: [Key: UInt32] = [:]
    /// The next id of each kind: none at or above it was ever handed out.
    public var next: [Kind: UInt32] = [:]

    public init(ids: [Key: UInt32] = [:], next: [Kind: UInt32] = [:]) {
        self.ids = ids
        self.next = next
    }

    public func next(_ kind: Kind) -> UInt32 { max(next[kind] ?? 0, kind.first) }
}

/// Reserved rule set ids (mirrors MANX_RULESET_* in bpf/include/manx/maps.h).
public enum ReservedRuleset {
    /// Not isolated in this direction: everything allowed.
    public static let allowAll: UInt32 = 0
    /// The ids the BPF programs reserve start here.
    public static let firstReserved: UInt32 = 0xffff_fff0
}

/// The canonical texts contents are digested from: equal contents give
/// equal texts in every process (sets are sorted, nothing depends on
/// hashing order or on numbers handed out in this process).
enum CanonicalText {
    static func matcher(_ e: EntityRule) -> String {
        var parts = ["nets=" + e.nets.map(\.description).sorted().joined(separator: ",")]
        parts.append("notNets=" + e.notNets.map(\.description).sorted().joined(separator: ","))
        parts.append("selects=" + (e.endpoints.map(endpointMatch) ?? "-"))
        parts.append("notSelects=" + (e.notSelector.map(endpointMatch) ?? "-"))
        parts.append("serviceAccounts=" + e.serviceAccountNames.sorted().joined(separator: ","))
        return parts.joined(separator: ";")
    }

    static func endpointMatch(_ m: EndpointMatch) -> String {
        let scope: String
        switch m.namespaces {
        case .any: scope = "*"
        case .named(let name): scope = "=" + name
        case .matching(let selector): scope = "~" + selector.description
        }
        return "{\(m.selector)|ns \(scope)|sa \(m.serviceAccountSelector?.description ?? "-")}"
    }

    static func identity(matchers: [String], ports: [NamedPort], workload: Bool) -> String {
        (["identity", workload ? "workload" : "addresses"] + matchers.sorted()
            + ports.map { "port \($0.name) \($0.proto.number) \($0.port)" }.sorted()).joined(separator: "\n")
    }

    static func rule(_ r: RuleInfo) -> String {
        ["rule", r.policy, r.tier, r.direction, r.index.map(String.init) ?? "-", r.action, r.summary].joined(separator: "\n")
    }

    static func ruleset(_ entries: [TableEntry]) -> String {
        (["ruleset"] + entries.map { e in
            let d = e.decision
            return "\(e.identity.map(String.init) ?? "*") \(e.proto.map(String.init) ?? "*") \(e.port)/\(e.portBits) "
                + "\(d.verdict.rawValue) \(d.ruleID) \(d.log ? 1 : 0) \(d.byDefault ? 1 : 0)"
        }).joined(separator: "\n")
    }
}
