import ManxModel

public enum Verdict: UInt8, Hashable, Sendable, Codable { case deny = 0, allow = 1 }

/// What the policy table says for one cell of {identity, proto, port}.
public struct Decision: Hashable, Sendable, Codable {
    public var verdict: Verdict
    public var ruleID: UInt32
    public var log: Bool
    /// No rule matched: a tier's default (or the profile) decided.
    public var byDefault: Bool

    public init(_ verdict: Verdict, _ ruleID: UInt32, log: Bool = false, byDefault: Bool = false) {
        self.verdict = verdict
        self.ruleID = ruleID
        self.log = log
        self.byDefault = byDefault
    }
}

/// One LPM entry of a rule set, relative to the rule set id:
/// identity nil = the rule set's default; proto nil = every other protocol
/// of that identity; otherwise a port prefix of `portBits` bits.
public struct TableEntry: Hashable, Sendable {
    public var identity: UInt32?
    public var proto: UInt8?
    public var port: UInt16
    public var portBits: Int
    public var decision: Decision

    public init(identity: UInt32?, proto: UInt8?, port: UInt16 = 0, portBits: Int = 0, decision: Decision) {
        self.identity = identity
        self.proto = proto
        self.port = port
        self.portBits = portBits
        self.decision = decision
    }
}

/// Reserved rule ids (mirrors MANX_RULE_* in bpf/include/manx/maps.h).
public enum ReservedRule {
    public static let none: UInt32 = 0
    public static let defaultDeny: UInt32 = 1
    /// Opened by the endpoint's own node (Kubernetes' node rule).
    public static let node: UInt32 = 2
    public static let first: UInt32 = 16
}

/// Reserved identities (mirrors MANX_IDENTITY_*).
public enum ReservedIdentity {
    public static let unknown: UInt32 = 0
    public static let host: UInt32 = 1
    public static let world: UInt32 = 2
    public static let first: UInt32 = 16
}

/// What a rule id stands for, for counters, flow logs and `bpfctl`.
public struct RuleInfo: Hashable, Sendable, Codable {
    public var policy: String
    public var tier: String
    public var direction: String
    /// nil for a tier's end-of-tier default or a profile.
    public var index: Int?
    public var action: String
    public var summary: String
}

public struct IdentityInfo: Hashable, Sendable, Codable {
    /// Workloads ("ns/name") and CIDR regions that carry this identity.
    public var members: [String]
}

public struct CompiledEndpoint: Hashable, Sendable {
    public var workload: String
    public var interface: String
    public var ip: IPv4Address
    public var identity: UInt32
    public var ingressRuleset: UInt32
    public var egressRuleset: UInt32
}

public struct IPCacheEntry: Hashable, Sendable {
    public var cidr: CIDR
    public var identity: UInt32
    public var localWorkload: Bool
}

/// Everything the dataplane programs, as plain values.
public struct CompiledState: Sendable {
    public var endpoints: [CompiledEndpoint] = []
    public var ipcache: [IPCacheEntry] = []
    /// Rule set id -> its entries. Ids are never reused for other content.
    public var rulesets: [UInt32: [TableEntry]] = [:]
    public var rules: [UInt32: RuleInfo] = [:]
    public var identities: [UInt32: IdentityInfo] = [:]
    /// The ids this state uses, by content, and the next free ones: the
    /// dataplane keeps them with the state, for a restarted compiler.
    public var allocations = Allocations()
    /// The compile's number, unique in the process.
    public var compileID: UInt64 = 0
    /// How `allocations.ids` differ from those of the compile numbered
    /// `since` (nil: not known): a dataplane that holds that compile's
    /// writes only this.
    public var allocationChanges: AllocationChanges?

    public struct AllocationChanges: Sendable {
        public var since: UInt64
        public var set: [Allocations.Key: UInt32] = [:]
        public var removed: [Allocations.Key] = []
    }

    public init() {}
}
