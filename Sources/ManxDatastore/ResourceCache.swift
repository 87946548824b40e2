import ManxModel

/// The datastore's content as the daemon holds it: every key's decoded
/// documents, kept up to date by the datastore's updates. Only keys whose
/// text changed are decoded again.
public final class ResourceCache {
    /// Checks a key's decoded documents against the key (a keyed datastore
    /// holds one resource under its own key).
    public typealias KeyCheck = (String, ResourceSet.DecodedFile) -> [ValidationError]

    private let check: KeyCheck?
    private var entries: [String: Entry] = [:]
    /// The revision of the last update applied.
    public private(set) var revision: Int64 = 0

    struct Entry {
        var digest: UInt64
        var decoded: ResourceSet.DecodedFile
    }

    public init(check: KeyCheck? = nil) { self.check = check }

    /// Applies an update; returns how many keys were decoded.
    @discardableResult
    public func apply(_ update: DatastoreUpdate) -> Int {
        switch update {
        case .snapshot(let all, let revision):
            var decoded = 0
            var next: [String: Entry] = [:]
            for (key, text) in all {
                let digest = DirectoryDatastore.fileDigest(text)
                if let old = entries[key], old.digest == digest {
                    next[key] = old
                } else {
                    next[key] = decode(key, text, digest)
                    decoded += 1
                }
            }
            entries = next
            self.revision = revision
            return decoded
        case .changes(let changes, let revision):
            for (key, text) in changes {
                entries[key] = text.map { decode(key, $0, DirectoryDatastore.fileDigest($0)) }
            }
            self.revision = revision
            return changes.values.count { $0 != nil }
        case .unreachable:
            return 0
        }
    }

    private func decode(_ key: String, _ text: String, _ digest: UInt64) -> Entry {
        let file = ResourceSet.decodeFile(name: key, text: text)
        return Entry(digest: digest, decoded: file.adding(check?(key, file) ?? []))
    }

    public var count: Int { entries.count }

    /// A digest of every key and its content: equal digests, equal content
    /// (for a directory, the same as `DirectoryDatastore.snapshot().digest`).
    public var digest: String {
        DirectoryDatastore.digest(entries.sorted { $0.key < $1.key }.map { ($0.key, $0.value.digest) })
    }

    /// Everything, validated as one batch.
    public func assemble() throws(ValidationErrors) -> ResourceSet {
        try ResourceSet.assemble(entries.sorted { $0.key < $1.key }.map(\.value.decoded))
    }
}
