import Foundation
import ManxBPF
import ManxCompiler

/// What the daemon last did, and the names behind the numbers in the maps:
/// written after every apply (atomically) for `bpfctl` and for tooling that
/// waits for a change to be in force.
public struct NodeMetadata: Codable, Sendable {
    public struct Endpoint: Codable, Sendable {
        public var workload: String
        public var interface: String
        public var ip: String
        public var identity: UInt32
        public var ingressRuleset: UInt32
        public var egressRuleset: UInt32
        /// The interface's index when the policy was programmed: tells a
        /// pod's new veth from an earlier one of the same name.
        public var ifindex: Int32?
    }

    /// Records the index of every endpoint's interface, as programmed.
    public mutating func resolveInterfaces() {
        for i in endpoints.indices { endpoints[i].ifindex = try? NetworkInterface.index(named: endpoints[i].interface) }
    }

    public var generation: Int = 0
    /// Digest of the datastore content now in force.
    public var appliedDigest: String = ""
    /// The datastore revision that content was read at (etcd's revision; a
    /// count of changes for a directory).
    public var appliedRevision: Int64?
    /// Why the datastore cannot be read now, if it cannot (the last content
    /// stays in force meanwhile).
    public var datastoreError: String?
    public var appliedAt: Date?
    /// The last rejected batch, if it is still what the datastore holds.
    public var rejectedDigest: String?
    /// The revision of that rejected batch.
    public var rejectedRevision: Int64?
    public var error: String?
    public var endpoints: [Endpoint] = []
    public var missingInterfaces: [String] = []
    /// The MTU pods on this node must use (nil: no routing between nodes).
    public var podMTU: Int?
    /// The interface carrying the node's underlay address.
    public var underlay: String?
    public var rules: [UInt32: RuleInfo] = [:]
    public var identities: [UInt32: IdentityInfo] = [:]

    public init() {}

    public init(state: CompiledState) {
        endpoints = state.endpoints.map {
            Endpoint(workload: $0.workload, interface: $0.interface, ip: $0.ip.description, identity: $0.identity,
                     ingressRuleset: $0.ingressRuleset, egressRuleset: $0.egressRuleset)
        }
        rules = state.rules
        identities = state.identities
    }

    public static func read(_ paths: NodePaths) throws -> NodeMetadata {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(NodeMetadata.self, from: Data(contentsOf: URL(fileURLWithPath: paths.metadataFile)))
    }

    public func write(_ paths: NodePaths) throws {
        try FileManager.default.createDirectory(atPath: paths.stateDirectory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: paths.metadataFile), options: .atomic)
    }
}
