import ManxModel

/// What the CNI plugin asks for when a pod is added.
public struct IPAMRequest: Sendable, Equatable {
    /// Who will hold the address: the CNI container id.
    public var handle: String
    /// The node the pod runs on.
    public var node: String
    /// "namespace/pod", recorded with the allocation.
    public var workload: String
    /// From the annotation cni.projectcalico.org/ipv4pools: pool names or
    /// pool CIDRs. Empty: every pool the node may use.
    public var pools: [String]
    /// From the annotation cni.projectcalico.org/ipAddrs: a fixed address.
    public var address: IPv4Address?

    public init(handle: String, node: String, workload: String, pools: [String] = [], address: IPv4Address? = nil) {
        self.handle = handle
        self.node = node
        self.workload = workload
        self.pools = pools
        self.address = address
    }
}

/// An address held by a handle, and where it came from.
public struct IPAMAssignment: Sendable, Equatable, CustomStringConvertible {
    public var address: IPv4Address
    public var block: CIDR
    public var pool: String

    public init(address: IPv4Address, block: CIDR, pool: String) {
        self.address = address
        self.block = block
        self.pool = pool
    }

    public var description: String { "\(address) (block \(block), pool \(pool))" }
}

public struct IPAMError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable {
        /// The allowed pools have no free address for the node.
        case exhausted
        /// No pool fits: unknown, disabled or not allowed on the node, or
        /// a fixed address outside every enabled pool.
        case noPool
        /// The request (or an annotation) is malformed.
        case invalidRequest
        /// The fixed address is held by another handle.
        case addressInUse
        /// The datastore could not be read, written or locked, or holds
        /// invalid IPAM resources.
        case datastore
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
