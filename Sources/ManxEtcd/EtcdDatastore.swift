import ManxDatastore
import ManxModel
import Synchronization

/// The cluster datastore: resources under `ResourceKeys.prefix` in etcd,
/// and the IPAM blocks (a node routes other nodes' blocks).
///
/// `updates()` lists every key at one revision, then watches from the
/// revision after it. When the watch breaks it watches again from where it
/// stopped; when that history is compacted away it lists again (a new
/// snapshot: the consumer rewrites only what differs). While no member
/// answers it reports `unreachable` and retries with backoff, and the
/// consumer keeps the last content in force.
public struct EtcdDatastore: Datastore {
    public let client: EtcdClient
    /// Watched as one range, so the list and the watch share one revision;
    /// keys `follows` rejects (IPAM handles and claims) are left out.
    public let prefix: String
    public let follows: @Sendable (String) -> Bool
    /// How often the watch's member is asked for a sign of life: a member
    /// cut off by the network leaves a watch silent, not broken.
    public var probeInterval: Duration = .seconds(1)

    public init(client: EtcdClient, prefix: String = ResourceKeys.watchPrefix,
                follows: @escaping @Sendable (String) -> Bool = ResourceKeys.isFollowed) {
        self.client = client
        self.prefix = prefix
        self.follows = follows
    }

    public var description: String { "etcd \(client.endpoints.joined(separator: ","))" }

    public func updates() -> AsyncStream<DatastoreUpdate> {
        AsyncStream { continuation in
            let task = Task { await follow(continuation) }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// The revision to watch from, shared by the watch and its supervisor.
    final class Cursor: Sendable {
        let next = Mutex<Int64?>(nil) // nil: list first
    }

    private func follow(_ out: AsyncStream<DatastoreUpdate>.Continuation) async {
        let cursor = Cursor()
        var failures = 0
        while !Task.isCancelled {
            var from: Int64 = 0
            do {
                if cursor.next.withLock({ $0 }) == nil {
                    let (kvs, revision) = try await client.list(prefix: prefix)
                    let followed = kvs.filter { follows($0.key) }.map { ($0.key, $0.value) }
                    out.yield(.snapshot(Dictionary(followed, uniquingKeysWith: { _, b in b }), revision: revision))
                    cursor.next.withLock { $0 = revision + 1 }
                    failures = 0
                }
                from = cursor.next.withLock { $0 } ?? 0
                let start = from
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await batch in client.watch(prefix: prefix, from: start) {
                            var changes: [String: String?] = [:]
                            for event in batch.events where follows(event.key) { changes[event.key] = .some(event.value) }
                            // Even a batch of keys not followed moves the revision
                            // on: a node then says it has seen that revision.
                            out.yield(.changes(changes, revision: batch.revision))
                            cursor.next.withLock { $0 = batch.revision + 1 }
                        }
                    }
                    group.addTask {
                        while !Task.isCancelled {
                            try await Task.sleep(for: probeInterval)
                            _ = try await client.get(prefix)
                        }
                    }
                    try await group.next()
                    group.cancelAll()
                }
            } catch let error as EtcdError where error.compactedAt != nil {
                // The changes since the cursor are gone: list again.
                cursor.next.withLock { $0 = nil }
            } catch {
                if Task.isCancelled { break }
                // A watch that delivered something was working: count anew.
                if from > 0, let next = cursor.next.withLock({ $0 }), next > from { failures = 0 }
                // One member lost: the next one is tried at once. Only when
                // none answers is the datastore unreachable.
                failures += 1
                if failures >= client.endpoints.count {
                    out.yield(.unreachable(reason: "\(error)"))
                    let backoff = Duration.milliseconds(100 << min(failures - client.endpoints.count, 6))
                    try? await Task.sleep(for: min(backoff, .seconds(5)))
                }
            }
        }
        out.finish()
    }

    public func check(key: String, _ file: ResourceSet.DecodedFile) -> [ValidationError] { ResourceKeys.check(key: key, file) }

    /// Each resource under its own key, as JSON, in one transaction per
    /// `EtcdClient.maxOperations` resources (etcd's default limit per
    /// transaction): a file of up to that many is applied all or none.
    public func apply(_ documents: [ResourceDocument], file: String, text: String) async throws -> [String] {
        let keys = try Self.keys(documents, file: file)
        try await transact(zip(keys, documents).map { .put($0, $1.json) })
        return keys
    }

    public func remove(_ documents: [ResourceDocument], file: String) async throws -> [String] {
        let keys = try Self.keys(documents, file: file)
        try await transact(keys.map { .delete($0) })
        return keys
    }

    static func keys(_ documents: [ResourceDocument], file: String) throws -> [String] {
        try documents.map { document in
            guard let key = ResourceKeys.key(document.header) else {
                throw ValidationErrors([ValidationError(file: file, resource: document.header.description, field: "kind",
                                                        reason: "has no place in the etcd layout")])
            }
            return key
        }
    }

    /// One transaction per `EtcdClient.maxOperations` operations.
    private func transact(_ operations: [EtcdClient.Operation]) async throws {
        for start in stride(from: 0, to: operations.count, by: EtcdClient.maxOperations) {
            _ = try await client.transaction(if: [], then: Array(operations[start..<min(start + EtcdClient.maxOperations, operations.count)]))
        }
    }

}
