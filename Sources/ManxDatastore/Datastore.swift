import ManxModel

/// Where resources live: a directory of YAML files (the default), or etcd.
///
/// Both are read the same way: a list of everything, then a watch of the
/// changes after it. A key names one unit of content, a file name in a
/// directory or an etcd key, and its text holds YAML or JSON documents.
public protocol Datastore: Sendable, CustomStringConvertible {
    /// The datastore's content, for as long as the consumer iterates: first
    /// a snapshot of everything, then changes. The stream never ends on its
    /// own: while the datastore cannot be reached it says so, retries with
    /// backoff, and then continues with changes (or with a new snapshot when
    /// the changes it missed are gone, after a compaction).
    func updates() -> AsyncStream<DatastoreUpdate>

    /// Stores the validated documents of one file (`bpfctl apply`), all or
    /// none; returns the keys written.
    func apply(_ documents: [ResourceDocument], file: String, text: String) async throws -> [String]

    /// Removes the resources a file names (`bpfctl delete`); returns the keys removed.
    func remove(_ documents: [ResourceDocument], file: String) async throws -> [String]

    /// Errors in a key's decoded documents that only the datastore can
    /// see (etcd: a key holds one resource, under its own key).
    func check(key: String, _ file: ResourceSet.DecodedFile) -> [ValidationError]
}

extension Datastore {
    public func check(key: String, _ file: ResourceSet.DecodedFile) -> [ValidationError] { [] }
}

public enum DatastoreUpdate: Sendable, Equatable {
    /// Every key and its text, at a revision. Replaces what came before.
    case snapshot([String: String], revision: Int64)
    /// Keys changed since the previous update: new text, or nil if deleted.
    case changes([String: String?], revision: Int64)
    /// The datastore cannot be reached; the last content stays in force.
    case unreachable(reason: String)
}
