import ManxSelectors

/// An IP protocol number with the names operators write.
public struct IPProtocol: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var number: UInt8
    public init(_ number: UInt8) { self.number = number }

    public static let icmp = IPProtocol(1)
    public static let tcp = IPProtocol(6)
    public static let udp = IPProtocol(17)
    public static let icmpv6 = IPProtocol(58)
    public static let sctp = IPProtocol(132)
    public static let udplite = IPProtocol(136)

    static let names: [String: IPProtocol] = [
        "TCP": .tcp, "UDP": .udp, "SCTP": .sctp, "ICMP": .icmp, "ICMPV6": .icmpv6, "UDPLITE": .udplite,
    ]

    /// "TCP", "udp", "ICMP", or a number 1-255.
    public static func parse(_ text: String) -> IPProtocol? {
        if let p = names[text.uppercased()] { return p }
        if let n = UInt8(text), n > 0 { return IPProtocol(n) }
        return nil
    }

    /// Whether the protocol has ports (so port matches can apply).
    public var hasPorts: Bool { self == .tcp || self == .udp || self == .sctp || self == .udplite }

    public var description: String {
        switch self {
        case .tcp: return "TCP"
        case .udp: return "UDP"
        case .sctp: return "SCTP"
        case .icmp: return "ICMP"
        case .icmpv6: return "ICMPv6"
        case .udplite: return "UDPLite"
        default: return String(number)
        }
    }

    public static func < (a: IPProtocol, b: IPProtocol) -> Bool { a.number < b.number }
}

/// A named container port, which policies may refer to by name.
public struct NamedPort: Hashable, Sendable {
    public var name: String
    public var proto: IPProtocol
    public var port: UInt16
    public init(name: String, proto: IPProtocol, port: UInt16) {
        self.name = name
        self.proto = proto
        self.port = port
    }
}

/// Where a resource came from, for error messages and diagnostics.
public struct ResourceRef: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var kind: String
    public var namespace: String?
    public var name: String
    public var file: String

    public init(kind: String, namespace: String?, name: String, file: String) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.file = file
    }

    public var qualifiedName: String { namespace.map { "\($0)/\(name)" } ?? name }
    public var description: String { "\(kind) \(qualifiedName)" }

    public static func < (a: ResourceRef, b: ResourceRef) -> Bool {
        (a.kind, a.namespace ?? "", a.name) < (b.kind, b.namespace ?? "", b.name)
    }
}

public struct Namespace: Hashable, Sendable {
    public var name: String
    public var labels: [String: String]
    public var annotations: [String: String] = [:]
    public var ref: ResourceRef
}

public struct Pod: Hashable, Sendable {
    public var namespace: String
    public var name: String
    public var labels: [String: String]
    public var annotations: [String: String]
    public var ip: IPv4Address?
    public var ports: [NamedPort]
    public var serviceAccount: String
    public var nodeName: String?
    public var ref: ResourceRef
    /// Who made the workload: a Kubernetes pod, or another CNI runtime's
    /// container (then its labels and profiles are its endpoint's own).
    public var orchestrator: Orchestrator = .k8s
    /// The profiles of a `cni` workload, from its endpoint; nil for a
    /// Kubernetes pod, whose profiles are its namespace's and service
    /// account's (`kns.`, `ksa.`).
    public var profiles: [String]? = nil

    /// The host-side interface of a local workload, from the annotation.
    public var interface: String? { annotations[Pod.interfaceAnnotation] }
    public static let interfaceAnnotation = "manx.io/interface"
    public var key: String { "\(namespace)/\(name)" }
}

/// Calico's `spec.orchestrator` of a workload endpoint, and its
/// `projectcalico.org/orchestrator` label.
public enum Orchestrator: String, Hashable, Sendable {
    /// A Kubernetes pod.
    case k8s
    /// A container of any other CNI runtime (podman, containerd's ctr, nerdctl).
    case cni
}

/// A Calico tier: policies are evaluated tier by tier, in order.
public struct Tier: Hashable, Sendable {
    public var name: String
    /// nil sorts last.
    public var order: Double?
    /// What happens when a policy of the tier selects the endpoint but no
    /// rule matches: Deny (the default), or Pass to the next tier.
    public var defaultPass: Bool
    public var ref: ResourceRef

    /// Calico's built-in default tier, ordered after every other tier.
    public static let defaultTier = Tier(name: "default", order: 1_000_000, defaultPass: false,
                                         ref: ResourceRef(kind: "Tier", namespace: nil, name: "default", file: "(built in)"))
}

/// Labelled CIDRs that selectors can match (NetworkSet, or GlobalNetworkSet
/// when namespace is nil).
public struct NetworkSet: Hashable, Sendable {
    public var name: String
    public var namespace: String?
    public var labels: [String: String]
    public var nets: [CIDR]
    public var ref: ResourceRef
}

/// A Calico profile: rules that decide when no tier did. Kubernetes
/// endpoints get `kns.<namespace>` (built in: allow everything, unless a
/// Profile of that name replaces it) and `ksa.<namespace>.<serviceaccount>`.
public struct Profile: Hashable, Sendable {
    public var name: String
    public var ingress: [Rule]
    public var egress: [Rule]
    public var labelsToApply: [String: String]
    public var ref: ResourceRef

    public func rules(_ direction: Policy.Direction) -> [Rule] { direction == .ingress ? ingress : egress }
}
