/// Where a node's dataplane lives: map pins under bpffs, and the daemon's
/// metadata (rule and identity names, status) under /run. Several simulated
/// nodes on one machine each get their own pair of directories.
public struct NodePaths: Sendable, Hashable {
    public var pinRoot: String
    public var stateDirectory: String

    public static let pinBase = "/sys/fs/bpf/manx"
    public static let stateBase = "/run/manx"

    /// `node` empty: the machine's own dataplane.
    public init(node: String = "") {
        pinRoot = node.isEmpty ? Self.pinBase : "\(Self.pinBase)/\(node)"
        stateDirectory = node.isEmpty ? Self.stateBase : "\(Self.stateBase)/\(node)"
    }

    public var metadataFile: String { stateDirectory + "/metadata.json" }
    public var statusFile: String { stateDirectory + "/status.json" }
    /// A file per endpoint whose policy is in force (`EndpointStatus`).
    public var endpointStatusDirectory: String { stateDirectory + "/endpoint-status" }
}
