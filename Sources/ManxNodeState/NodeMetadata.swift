import Foundation
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

    /// Records the index of every endpoint's interface, as the dataplane
    /// programmed it (not looked up again: the name may be another
    /// interface's by now).
    public mutating func record(_ programmed: [EndpointStatus]) {
        let ifindex = Dictionary(programmed.map { ($0.workload, $0.ifindex) }) { a, _ in a }
        for i in endpoints.indices { endpoints[i].ifindex = ifindex[endpoints[i].workload] ?? nil }
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

    /// Writes the file atomically; with a cache, rules and identities
    /// encoded by an earlier write are reused.
    public func write(_ paths: NodePaths, cache: MetadataCache? = nil) throws {
        try FileManager.default.createDirectory(atPath: paths.stateDirectory, withIntermediateDirectories: true)
        let data = try cache?.encode(self) ?? Self.encoder().encode(self)
        try data.write(to: URL(fileURLWithPath: paths.metadataFile), options: .atomic)
    }

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}

/// The encoded rules and identities of the metadata, by id, kept between
/// writes. A rule id stands for one rule for good and identities change a
/// few at a time, so a write at 10k policies encodes only what is new;
/// encoding everything was most of a daemon pass. The output decodes as
/// `JSONEncoder`'s does (a dictionary with integer keys is an array of
/// keys and values), with ids in order.
public final class MetadataCache {
    private var rules: [UInt32: (RuleInfo, [UInt8])] = [:]
    private var identities: [UInt32: (IdentityInfo, [UInt8])] = [:]
    private let encoder = NodeMetadata.encoder()

    public init() {}

    func encode(_ metadata: NodeMetadata) throws -> Data {
        var rest = metadata
        rest.rules = [:]
        rest.identities = [:]
        let text = [UInt8](try encoder.encode(rest))
        // Both empty arrays are found in the small encoding; keys are
        // sorted, so identities come first. A string value cannot hold
        // these bytes (its quotes are escaped).
        let identitiesAt = try Self.find("\"identities\":[]", in: text, from: 0)
        let rulesAt = try Self.find("\"rules\":[]", in: text, from: identitiesAt.upperBound)
        var out: [UInt8] = []
        out += text[..<(identitiesAt.upperBound - 1)]
        out += try elements(metadata.identities, cache: &identities)
        out += text[(identitiesAt.upperBound - 1)..<(rulesAt.upperBound - 1)]
        out += try elements(metadata.rules, cache: &rules)
        out += text[(rulesAt.upperBound - 1)...]
        return Data(out)
    }

    private static func find(_ needle: String, in text: [UInt8], from start: Int) throws -> Range<Int> {
        let n = Array(needle.utf8)
        var i = start
        while i + n.count <= text.count {
            if text[i] == n[0] && text[i..<(i + n.count)].elementsEqual(n) { return i..<(i + n.count) }
            i += 1
        }
        throw MetadataError("no \(needle) in the encoded metadata")
    }

    private func elements<V: Encodable & Equatable>(_ values: [UInt32: V], cache: inout [UInt32: (V, [UInt8])]) throws -> [UInt8] {
        var out: [UInt8] = []
        for id in values.keys.sorted() {
            let value = values[id]!
            let bytes: [UInt8]
            if let cached = cache[id], cached.0 == value {
                bytes = cached.1
            } else {
                bytes = [UInt8](try encoder.encode(value))
                cache[id] = (value, bytes)
            }
            if !out.isEmpty { out.append(UInt8(ascii: ",")) }
            out += Array("\(id),".utf8)
            out += bytes
        }
        if cache.count > 2 * values.count + 64 { cache = cache.filter { values[$0.key] != nil } }
        return out
    }
}

struct MetadataError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
