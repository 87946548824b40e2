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

    /// Each resource under its own key, as JSON, in one transaction, all
    /// or none. The content is listed, the result validated whole, and the
    /// transaction succeeds only if no key was written since the listing
    /// (else it is tried again, from the listing). etcd takes at most
    /// `EtcdClient.maxOperations` operations and `maxRequestBytes` per
    /// transaction (its defaults); a larger change is refused, not split,
    /// so that what is written is always all of it.
    public func change(_ changes: [ResourceChange], inParts: Bool = false) async throws -> [[String]] {
        var partsWritten = 0
        for _ in 0..<3 {
            let (kvs, revision) = try await client.list(prefix: ResourceKeys.watchPrefix)
            var before: [String: String] = [:]
            for kv in kvs where ResourceKeys.isFollowed(kv.key) { before[kv.key] = kv.value }
            var after = before
            var keys: [[String]] = []
            for change in changes {
                let fileKeys = try Self.keys(change.documents, file: change.file)
                keys.append(fileKeys)
                for (key, document) in zip(fileKeys, change.documents) { after[key] = change.action == .apply ? document.json : nil }
            }
            var operations: [EtcdClient.Operation] = []
            var bytes = 0
            for (key, value) in after.sorted(by: { $0.key < $1.key }) where before[key] != value {
                operations.append(.put(key, value))
                bytes += key.utf8.count + value.utf8.count
            }
            for key in before.keys.sorted() where after[key] == nil {
                operations.append(.delete(key))
                bytes += key.utf8.count
            }
            if !inParts && operations.count > EtcdClient.maxOperations {
                throw EtcdError(message: "this changes \(operations.count) keys, and etcd takes at most \(EtcdClient.maxOperations) operations in one transaction (--max-txn-ops): nothing was written; apply it in parts of at most \(EtcdClient.maxOperations) resources, each all or nothing, or with --in-parts")
            }
            if !inParts && bytes > Self.maxRequestBytes {
                throw EtcdError(message: "this writes \(bytes) bytes, and etcd takes at most \(Self.maxRequestBytes) in one request (--max-request-bytes, 1.5 MiB): nothing was written; apply it in smaller parts, or with --in-parts")
            }
            try checkChange(from: before, to: after)
            // Each part only if nothing was written since the one before it
            // (or the listing): a writer in between makes the rest wait for
            // a new listing.
            var since = revision, parts = Self.parts(operations)
            while let part = parts.first {
                let result = try await client.transaction(ifUnchangedSince: since, under: ResourceKeys.watchPrefix, then: part)
                guard result.succeeded else { break }
                since = result.revision
                parts.removeFirst()
                partsWritten += 1
            }
            if parts.isEmpty { return keys }
        }
        // Only in parts can some of it be in already; applying it again
        // writes the rest.
        let written = partsWritten == 0 ? "nothing was written" : "\(partsWritten) parts were written, the rest was not"
        throw EtcdError(message: "the datastore kept changing while this change was checked; \(written), try again")
    }

    /// Operations in transactions within etcd's limits, in order.
    static func parts(_ operations: [EtcdClient.Operation]) -> [[EtcdClient.Operation]] {
        var parts: [[EtcdClient.Operation]] = [], part: [EtcdClient.Operation] = [], bytes = 0
        for op in operations {
            let size: Int
            switch op {
            case .put(let k, let v): size = k.utf8.count + v.utf8.count
            case .delete(let k): size = k.utf8.count
            }
            if !part.isEmpty && (part.count == EtcdClient.maxOperations || bytes + size > maxRequestBytes) {
                parts.append(part)
                (part, bytes) = ([], 0)
            }
            part.append(op)
            bytes += size
        }
        if !part.isEmpty { parts.append(part) }
        return parts
    }

    /// etcd's default --max-request-bytes, less room for the request's own framing.
    static let maxRequestBytes = 1_572_864 - 16_384

    static func keys(_ documents: [ResourceDocument], file: String) throws -> [String] {
        try documents.map { document in
            guard let key = ResourceKeys.key(document.header) else {
                throw ValidationErrors([ValidationError(file: file, resource: document.header.description, field: "kind",
                                                        reason: "has no place in the etcd layout")])
            }
            return key
        }
    }

}
