import ManxSelectors

/// The one policy form the compiler reads. Kubernetes NetworkPolicies and
/// Calico NetworkPolicy/GlobalNetworkPolicy resources are all translated to
/// it, with Calico's semantics: tiers, orders, ordered rules, actions.
public struct Policy: Hashable, Sendable {
    public enum Direction: String, Hashable, Sendable, CaseIterable { case ingress = "Ingress", egress = "Egress" }

    /// Policy name as Calico shows it (`knp.default.<name>` for Kubernetes ones).
    public var name: String
    /// nil for global policies.
    public var namespace: String?
    public var tier: String
    /// nil sorts after every number (Calico: "no order" comes last).
    public var order: Double?
    /// Which endpoints the policy applies to. For a namespaced policy the
    /// namespace restriction is part of `appliesTo`.
    public var appliesTo: EndpointMatch
    public var types: Set<Direction>
    public var ingress: [Rule]
    public var egress: [Rule]
    public var ref: ResourceRef

    public init(name: String, namespace: String?, tier: String, order: Double?, appliesTo: EndpointMatch,
                types: Set<Direction>, ingress: [Rule], egress: [Rule], ref: ResourceRef) {
        self.name = name
        self.namespace = namespace
        self.tier = tier
        self.order = order
        self.appliesTo = appliesTo
        self.types = types
        self.ingress = ingress
        self.egress = egress
        self.ref = ref
    }

    public func rules(_ direction: Direction) -> [Rule] { direction == .ingress ? ingress : egress }

    public var qualifiedName: String { namespace.map { "\($0)/\(name)" } ?? name }
}

/// Which workload endpoints something selects.
public struct EndpointMatch: Hashable, Sendable {
    public var selector: Selector
    public var namespaces: NamespaceScope
    public var serviceAccountSelector: Selector?

    public init(selector: Selector, namespaces: NamespaceScope, serviceAccountSelector: Selector? = nil) {
        self.selector = selector
        self.namespaces = namespaces
        self.serviceAccountSelector = serviceAccountSelector
    }
}

/// The namespaces a selector is evaluated in.
public enum NamespaceScope: Hashable, Sendable {
    case any
    case named(String)
    /// Namespaces whose labels match. `global()` means non-namespaced
    /// resources (global network sets) instead.
    case matching(Selector)
}

public enum RuleAction: String, Hashable, Sendable { case allow = "Allow", deny = "Deny", pass = "Pass", log = "Log" }

/// A destination (or source) port match: a range, or a named port that is
/// resolved against the endpoint that owns the port.
public enum PortMatch: Hashable, Sendable, CustomStringConvertible {
    case range(UInt16, UInt16)
    case named(String)

    public var description: String {
        switch self {
        case let .range(lo, hi): return lo == hi ? "\(lo)" : "\(lo):\(hi)"
        case let .named(n): return n
        }
    }
}

public struct ICMPMatch: Hashable, Sendable {
    public var type: UInt8?
    public var code: UInt8?
    public init(type: UInt8?, code: UInt8?) { self.type = type; self.code = code }
}

/// One side of a rule (Calico's `source` / `destination`).
public struct EntityRule: Hashable, Sendable {
    public var nets: [CIDR] = []
    public var notNets: [CIDR] = []
    /// Endpoint (or network set) selection; nil when the rule says nothing
    /// about labels, so any address (subject to nets) matches.
    public var endpoints: EndpointMatch?
    public var notSelector: EndpointMatch?
    public var serviceAccountNames: [String] = []
    public var ports: [PortMatch] = []
    public var notPorts: [PortMatch] = []

    public init() {}

    public var isEmpty: Bool { self == EntityRule() }
}

public struct Rule: Hashable, Sendable {
    public var action: RuleAction
    public var proto: IPProtocol?
    public var notProto: IPProtocol?
    public var icmp: ICMPMatch?
    public var notICMP: ICMPMatch?
    /// 6 never matches IPv4 traffic; nil or 4 does.
    public var ipVersion: Int?
    public var source = EntityRule()
    public var destination = EntityRule()
    /// Position in the policy's rule list for this direction (for display).
    public var index: Int

    public init(action: RuleAction, index: Int) {
        self.action = action
        self.index = index
    }
}
