import Foundation
import ManxDatastore
import ManxEtcd
import ManxModel

/// IPAM in etcd, as Calico's IPAM does it: every change to a block is a
/// transaction that holds only if the block's mod revision is still the
/// one the decision was made from (0: the block must not exist yet). A
/// writer that loses the race reads again and decides again, so two nodes
/// or two CNI invocations never hand out one address twice, with no lock
/// to leave behind. A new block's claim (affinity) and the handle are
/// written in the same transaction.
///
/// Invocations on one node also take a node-local flock first, as Calico's
/// CNI plugin takes its host-wide IPAM lock: pods of one node share its
/// blocks, and fifty of them racing for one block would mostly lose.
public struct EtcdIPAM: IPAMStore {
    public let client: EtcdClient
    /// The node-local lock file (nil: none).
    public let lockPath: String?
    /// Attempts before giving up under contention.
    public var maxAttempts = 200

    public init(client: EtcdClient, lockPath: String?) {
        self.client = client
        self.lockPath = lockPath
    }

    func locked<T>(_ body: () throws(IPAMError) -> T) throws(IPAMError) -> T {
        guard let lockPath else { return try body() }
        return try IPAMLock(path: lockPath).withLock(exclusive: true, body)
    }

    struct Loaded {
        var state: IPAMState
        /// Each block's mod revision.
        var revisions: [CIDR: Int64]
    }

    /// Pools and nodes, read once per call: they change rarely, and a
    /// decision from a stale pool list is still checked against the blocks.
    func loadPools() async throws -> [EtcdClient.KeyValue] {
        // Both at once: each is a round trip.
        async let pools = client.list(prefix: ResourceKeys.prefix + "projectcalico.org/ippools/").kvs
        async let nodes = client.list(prefix: ResourceKeys.prefix + "projectcalico.org/nodes/").kvs
        return try await pools + nodes
    }

    func load(_ pools: [EtcdClient.KeyValue]) async throws -> Loaded {
        let blocks = try await client.list(prefix: ResourceKeys.blockPrefix).kvs
        let set: ResourceSet
        do {
            set = try ResourceSet.decode(files: (pools + blocks).map { ($0.key, $0.value) }, kinds: IPAM.kinds)
        } catch {
            throw IPAMError(.datastore, "invalid IPAM resources in etcd:\n\(error)")
        }
        var revisions: [CIDR: Int64] = [:]
        for block in set.ipamBlocks.values {
            revisions[block.cidr] = blocks.first { $0.key == ResourceKeys.blockKey(block.cidr) }?.modRevision ?? -1
        }
        return Loaded(state: IPAMState(set), revisions: revisions)
    }

    static func blockJSON(_ block: IPAMBlock) throws -> String {
        guard let document = try ResourceSet.documents(file: ResourceKeys.blockKey(block.cidr), text: block.yaml).first else {
            throw IPAMError(.datastore, "block \(block.cidr) does not encode")
        }
        return document.json
    }

    static func handleJSON(_ handle: String, blocks: [CIDR]) -> String {
        let counts = Dictionary(blocks.map { ($0.description, 1) }, uniquingKeysWith: +)
        let data = (try? JSONSerialization.data(withJSONObject: ["handleID": handle, "block": counts], options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    public func assign(_ r: IPAMRequest) throws(IPAMError) -> IPAMAssignment {
        try locked { () throws(IPAMError) -> IPAMAssignment in try blocking { () async throws -> IPAMAssignment in
            let pools = try await loadPools()
            for attempt in 0..<maxAttempts {
                // Read together: the transaction checks both revisions anyway.
                async let handle = client.get(ResourceKeys.handleKey(r.handle))
                var loaded = try await load(pools)
                let handleRevision = try await handle?.modRevision ?? 0
                let (assignment, changed) = try loaded.state.assign(r)
                guard let block = changed else { return assignment }
                let known = loaded.revisions[block.cidr]
                var operations: [EtcdClient.Operation] = [.put(ResourceKeys.blockKey(block.cidr), try Self.blockJSON(block)),
                                                          .put(ResourceKeys.handleKey(r.handle), Self.handleJSON(r.handle, blocks: [block.cidr]))]
                if known == nil { operations.append(.put(ResourceKeys.affinityKey(node: block.node, block.cidr), #"{"state":"confirmed"}"#)) }
                // The block and the handle as they were read: a second ADD
                // with the same handle finds the first one's address.
                let compares = [EtcdClient.Compare(key: ResourceKeys.blockKey(block.cidr), modRevision: known ?? 0),
                                EtcdClient.Compare(key: ResourceKeys.handleKey(r.handle), modRevision: handleRevision)]
                if try await client.transaction(if: compares, then: operations).succeeded { return assignment }
                try await Self.pause(attempt)
            }
            throw IPAMError(.datastore, "no address for handle \(r.handle) after \(maxAttempts) attempts: etcd's blocks changed under every one")
        } }
    }

    @discardableResult
    public func release(handle: String) throws(IPAMError) -> [IPv4Address] {
        try locked { () throws(IPAMError) -> [IPv4Address] in try blocking { () async throws -> [IPv4Address] in
            let pools = try await loadPools()
            var released: [IPv4Address] = []
            var attempt = 0
            while true {
                var loaded = try await load(pools)
                let (addresses, changed) = loaded.state.release(handle: handle)
                guard let block = changed.first else { break }
                let compare = EtcdClient.Compare(key: ResourceKeys.blockKey(block.cidr), modRevision: loaded.revisions[block.cidr] ?? 0)
                if try await client.transaction(if: [compare], then: [.put(ResourceKeys.blockKey(block.cidr), try Self.blockJSON(block))]).succeeded {
                    released += addresses.filter { block.cidr.contains($0) }
                    continue
                }
                attempt += 1
                guard attempt < maxAttempts else {
                    throw IPAMError(.datastore, "cannot release handle \(handle) after \(maxAttempts) attempts: etcd's blocks changed under every one")
                }
                try await Self.pause(attempt)
            }
            try await client.delete(ResourceKeys.handleKey(handle))
            return released.sorted()
        } }
    }

    public func assignments(handle: String) throws(IPAMError) -> [IPAMAssignment] {
        try blocking { try await load(loadPools()).state.assignments(handle: handle) }
    }

    /// A short random pause after losing a race, growing with the attempts.
    static func pause(_ attempt: Int) async throws {
        try await Task.sleep(for: .microseconds(Int.random(in: 0...(500 << min(attempt, 5)))))
    }

    private func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws(IPAMError) -> T {
        do {
            return try runBlocking(body)
        } catch let error as IPAMError {
            throw error
        } catch {
            throw IPAMError(.datastore, "etcd: \(error)")
        }
    }
}
