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

    /// Applies or deletes the resources of some files (`bpfctl apply`,
    /// `bpfctl delete`), all of them or none: the content they would leave
    /// is validated whole first, and refused if it has an error the
    /// current content does not have. Returns each file's keys.
    /// `inParts`: what one write cannot hold (etcd's limits per
    /// transaction) is written in several, one after another (a bulk
    /// load: nodes may see it part written).
    func change(_ changes: [ResourceChange], inParts: Bool) async throws -> [[String]]

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

/// One file of a `bpfctl apply` or `bpfctl delete`, validated alone.
public struct ResourceChange: Sendable {
    public enum Action: Sendable { case apply, delete }
    public var action: Action
    public var file: String
    public var text: String
    public var documents: [ResourceDocument]

    public init(_ action: Action, file: String, text: String, documents: [ResourceDocument]) {
        (self.action, self.file, self.text, self.documents) = (action, file, text, documents)
    }
}

extension Datastore {
    /// Refuses content (keys and their texts) with an error that `before`
    /// does not have: a change may leave errors it did not make (so a fix
    /// can be applied), never add one. Keys whose text is the same are
    /// decoded once.
    public func checkChange(from before: [String: String], to after: [String: String]) throws(ValidationErrors) {
        let cache = ResourceCache(check: { key, file in self.check(key: key, file) })
        cache.apply(.snapshot(before, revision: 0))
        let old = Set(Self.errors(cache))
        var changes: [String: String?] = [:]
        for (key, text) in after where before[key] != text { changes[key] = .some(text) }
        for key in before.keys where after[key] == nil { changes[key] = .some(nil) }
        cache.apply(.changes(changes, revision: 1))
        let added = Self.errors(cache).filter { !old.contains($0) }
        if !added.isEmpty { throw ValidationErrors(added) }
    }

    private static func errors(_ cache: ResourceCache) -> [ValidationError] {
        do { _ = try cache.assemble(); return [] } catch { return error.errors }
    }
}
