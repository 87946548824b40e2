import ManxSelectors

// Pod networking resources: address pools, nodes, IPAM blocks, workload
// endpoints and the Felix settings Manx reads. Policy never looks at these;
// IPAM, the CNI plugin and the routing compiler do.

/// How a pool's traffic between nodes is carried (Calico's ipipMode/vxlanMode).
public enum EncapMode: String, Hashable, Sendable, CaseIterable {
    case always = "Always"
    /// Encapsulate only towards nodes on another subnet.
    case crossSubnet = "CrossSubnet"
    case never = "Never"
}

/// The encapsulation on the wire between two nodes.
public enum Encapsulation: String, Hashable, Sendable, CaseIterable {
    case none, ipip, vxlan

    /// Bytes the encapsulation adds to every packet.
    public var overhead: Int {
        switch self {
        case .none: return 0
        case .ipip: return 20
        case .vxlan: return 50
        }
    }
}

/// projectcalico.org/v3 IPPool.
public struct IPPool: Hashable, Sendable {
    public var name: String
    public var cidr: CIDR
    /// Prefix length of the blocks nodes claim (default 26).
    public var blockSize: Int
    public var ipipMode: EncapMode
    public var vxlanMode: EncapMode
    public var natOutgoing: Bool
    public var disabled: Bool
    /// Which nodes may claim blocks from the pool (default all()).
    public var nodeSelector: Selector
    public var ref: ResourceRef

    public init(name: String, cidr: CIDR, blockSize: Int = 26, ipipMode: EncapMode = .never, vxlanMode: EncapMode = .never,
                natOutgoing: Bool = false, disabled: Bool = false, nodeSelector: Selector = .all, ref: ResourceRef) {
        self.name = name
        self.cidr = cidr
        self.blockSize = blockSize
        self.ipipMode = ipipMode
        self.vxlanMode = vxlanMode
        self.natOutgoing = natOutgoing
        self.disabled = disabled
        self.nodeSelector = nodeSelector
        self.ref = ref
    }

    /// The pool's encapsulation kind and when it applies (at most one of
    /// IPIP and VXLAN is enabled; validation rejects both).
    public var encapsulation: (Encapsulation, EncapMode) {
        if ipipMode != .never { return (.ipip, ipipMode) }
        if vxlanMode != .never { return (.vxlan, vxlanMode) }
        return (.none, .never)
    }
}

/// projectcalico.org/v3 Node: a host of the cluster and its underlay address.
public struct ClusterNode: Hashable, Sendable {
    public var name: String
    public var labels: [String: String]
    /// `spec.bgp.ipv4Address`, e.g. 10.99.0.1/24: the address and its subnet.
    public var address: IPv4Address
    public var subnet: CIDR
    public var ref: ResourceRef

    public init(name: String, labels: [String: String] = [:], address: IPv4Address, subnet: CIDR, ref: ResourceRef) {
        self.name = name
        self.labels = labels
        self.address = address
        self.subnet = subnet
        self.ref = ref
    }
}

/// projectcalico.org/v3 FelixConfiguration: the settings Manx reads.
/// `default` applies to every node, `node.NAME` overrides it for one node.
public struct FelixConfiguration: Hashable, Sendable {
    public var name: String
    /// MTU of pods when IPIP is in use; nil: derived from the underlay.
    public var ipipMTU: Int?
    /// MTU of pods when VXLAN is in use; nil: derived from the underlay.
    public var vxlanMTU: Int?
    public var ref: ResourceRef

    public init(name: String, ipipMTU: Int? = nil, vxlanMTU: Int? = nil, ref: ResourceRef) {
        self.name = name
        self.ipipMTU = ipipMTU
        self.vxlanMTU = vxlanMTU
        self.ref = ref
    }
}

/// An IPAM block (Manx's form of Calico's IPAMBlock): a piece of a pool
/// claimed by one node, with every address handed out from it.
public struct IPAMBlock: Hashable, Sendable {
    public struct Allocation: Hashable, Sendable {
        public var address: IPv4Address
        /// Who holds it: the CNI container id.
        public var handle: String
        /// "namespace/pod", for people and diagnostics.
        public var workload: String
        /// The node the address is used on (differs from the block's
        /// affinity when a fixed address was requested from another
        /// node's block).
        public var node: String

        public init(address: IPv4Address, handle: String, workload: String, node: String) {
            self.address = address
            self.handle = handle
            self.workload = workload
            self.node = node
        }
    }

    public var cidr: CIDR
    public var pool: String
    /// The node that claimed the block; its remote routes point there.
    public var node: String
    public var allocations: [Allocation]
    public var ref: ResourceRef

    public init(cidr: CIDR, pool: String, node: String, allocations: [Allocation] = [], ref: ResourceRef) {
        self.cidr = cidr
        self.pool = pool
        self.node = node
        self.allocations = allocations
        self.ref = ref
    }

    /// The document name a block is stored under.
    public static func resourceName(_ cidr: CIDR) -> String {
        "\(cidr.address)-\(cidr.prefixLength)".replacingOccurrences(of: ".", with: "-")
    }
}

/// projectcalico.org/v3 WorkloadEndpoint: a pod's interface on a node,
/// written by the CNI plugin. It gives the pod its address and interface.
public struct WorkloadEndpoint: Hashable, Sendable {
    public var namespace: String
    public var name: String
    public var pod: String
    public var node: String
    public var containerID: String
    /// Host side of the pod's veth.
    public var interfaceName: String
    public var address: IPv4Address
    public var mac: String?
    /// The pod side's interface name (`spec.endpoint`).
    public var endpoint: String = "eth0"
    public var ref: ResourceRef
    /// `k8s`: `pod` names a Pod, whose labels and namespace decide policy.
    /// `cni`: `pod` is the container's workload ID (`spec.workload`), and
    /// the endpoint's own labels and profiles decide.
    public var orchestrator: Orchestrator = .k8s
    /// `metadata.labels` of a `cni` endpoint.
    public var labels: [String: String] = [:]
    /// `spec.profiles` of a `cni` endpoint.
    public var profiles: [String] = []

    public init(namespace: String, name: String, pod: String, node: String, endpoint: String = "eth0", containerID: String,
                interfaceName: String, address: IPv4Address, mac: String? = nil, ref: ResourceRef) {
        self.namespace = namespace
        self.name = name
        self.pod = pod
        self.node = node
        self.endpoint = endpoint
        self.containerID = containerID
        self.interfaceName = interfaceName
        self.address = address
        self.mac = mac
        self.ref = ref
    }

    public var podKey: String { "\(namespace)/\(pod)" }

    /// Calico's naming: NODE-k8s-POD-eth0 (NODE-cni-WORKLOAD-eth0), with
    /// '-' in parts doubled.
    public static func resourceName(node: String, orchestrator: Orchestrator = .k8s, pod: String, endpoint: String = "eth0") -> String {
        [node, orchestrator.rawValue, pod, endpoint].map { $0.replacingOccurrences(of: "-", with: "--") }.joined(separator: "-")
    }
}

extension WorkloadEndpoint {
    /// Linux's rule for interface names (dev_valid_name): 1-15 bytes, not
    /// "." or "..", no '/', ':' or whitespace.
    public static func interfaceNameProblem(_ s: String) -> String? {
        guard (1...15).contains(s.utf8.count) else { return "interface name '\(s)' must be 1-15 bytes" }
        guard s != ".", s != "..", !s.contains(where: { $0 == "/" || $0 == ":" || $0.isWhitespace }), s.allSatisfy(\.isASCII) else {
            return "'\(s)' is not a valid interface name (ASCII, no '/', ':' or whitespace)"
        }
        return nil
    }
}
