import Foundation
import ManxModel
import Synchronization

/// The default datastore: a directory of YAML files (`*.yaml`, `*.yml`),
/// each holding one or more documents. Hidden files and editor temporaries
/// are ignored, so writers can stage a file and rename it into place.
public struct DirectoryDatastore: Datastore {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public var description: String { "directory \(directory)" }

    /// Follows the directory on a thread of its own (inotify blocks): a
    /// snapshot of every file, then the files that changed on each inotify
    /// event, with a full scan every 2 s anyway (an overflowed event queue,
    /// a directory replaced). The keys are file names.
    public func updates() -> AsyncStream<DatastoreUpdate> {
        let (stream, continuation) = AsyncStream<DatastoreUpdate>.makeStream()
        let stopped = StopFlag()
        continuation.onTermination = { _ in stopped.flag.store(true, ordering: .relaxed) }
        let thread = Thread { [self] in follow(continuation, stopped) }
        thread.name = "manx-directory-watch"
        thread.start()
        return stream
    }

    final class StopFlag: Sendable {
        let flag = Atomic<Bool>(false)
    }

    private func follow(_ out: AsyncStream<DatastoreUpdate>.Continuation, _ stopped: StopFlag) {
        var revision: Int64 = 0
        var backoffMs: UInt32 = 100
        while !stopped.flag.load(ordering: .relaxed) {
            do {
                let watcher = try DirectoryWatcher(directory: directory)
                let scanner = DirectoryScanner(self)
                revision += 1
                out.yield(.snapshot(try scanner.scan().compactMapValues { $0 }, revision: revision))
                backoffMs = 100
                var lastScan = ContinuousClock.now
                while !stopped.flag.load(ordering: .relaxed) {
                    // The files the events name are read; every 2 s, and when
                    // events were lost, the whole directory is (a change that
                    // raised no event, such as one through a bind mount).
                    let changes: [String: String?]
                    switch watcher.wait(timeoutMs: 250) {
                    case .names(let names) where ContinuousClock.now - lastScan < .seconds(2):
                        changes = try scanner.scan(only: names)
                    case .none where ContinuousClock.now - lastScan < .seconds(2):
                        continue
                    default:
                        lastScan = ContinuousClock.now
                        changes = try scanner.scan()
                    }
                    if changes.isEmpty { continue }
                    revision += 1
                    out.yield(.changes(changes, revision: revision))
                }
            } catch {
                // Start over with a new snapshot once the directory reads again.
                out.yield(.unreachable(reason: "\(error)"))
                usleep(backoffMs * 1000)
                backoffMs = min(backoffMs * 2, 5000)
            }
        }
        out.finish()
    }

    /// A file applied is kept whole, as one file of the same name written
    /// atomically: the daemon sees all of its documents or none. A delete
    /// removes whole files: each file that defines one of the resources
    /// must define nothing else. The content left is validated whole
    /// first (a resource that another file defines is a duplicate there).
    /// All files change in one commit (`DirectoryCommit`): readers see the
    /// directory before it or after it, and a crash leaves one of the two.
    /// Concurrent changes are serialised, each validated against the
    /// content the one before it left.
    public func change(_ changes: [ResourceChange], inParts: Bool = false) async throws -> [[String]] {
        let commit = DirectoryCommit(directory: directory)
        return try commit.withLock { try change(changes, commit) }
    }

    private func change(_ changes: [ResourceChange], _ commit: DirectoryCommit) throws -> [[String]] {
        let before = Dictionary(try files(), uniquingKeysWith: { a, _ in a })
        var after = before
        var names: [[String]] = []
        var errors: [ValidationError] = []
        for change in changes {
            switch change.action {
            case .apply:
                let name = try Self.fileName(for: change)
                after[name] = change.text
                names.append([name])
            case .delete:
                let wanted = Set(change.documents.map(\.header))
                var removed: [String] = []
                for (name, text) in after.sorted(by: { $0.key < $1.key }) {
                    let headers = ResourceSet.decodeFile(name: name, text: text).headers
                    guard headers.contains(where: wanted.contains) else { continue }
                    let others = headers.filter { !wanted.contains($0) }
                    if others.isEmpty {
                        after[name] = nil
                        removed.append(name)
                    } else {
                        errors.append(ValidationError(file: change.file, resource: others[0].description, field: "",
                                                      reason: "\(name) of \(directory) also defines \(others.map(\.description).joined(separator: ", ")); edit that file"))
                    }
                }
                names.append(removed)
            }
        }
        if !errors.isEmpty { throw ValidationErrors(errors) }
        try checkChange(from: before, to: after)
        var writes: [String: String] = [:]
        for (name, text) in after where before[name] != text { writes[name] = text }
        let removes = before.keys.filter { after[$0] == nil }
        if !writes.isEmpty || !removes.isEmpty { try commit.commit(writes: writes, removes: removes) }
        return names
    }

    /// The file an applied file becomes: its own name (standard input: one
    /// named after its first resource).
    static func fileName(for change: ResourceChange) throws(ValidationErrors) -> String {
        var name = (change.file as NSString).lastPathComponent
        if name == "-" || name.isEmpty, let first = change.documents.first {
            name = "\(first.header.kind.lowercased())-\(first.header.namespace.map { "\($0)-" } ?? "")\(first.header.name).yaml"
        }
        guard !name.hasPrefix("."), name.hasSuffix(".yaml") || name.hasSuffix(".yml") else {
            throw ValidationErrors([ValidationError(file: change.file, resource: "", field: "",
                                                    reason: "a directory datastore reads only *.yaml and *.yml files that are not hidden")])
        }
        return name
    }

    public struct Snapshot: Sendable {
        public var files: [(name: String, text: String)]
        /// A digest of every file's name and content: equal digests, equal input.
        public var digest: String
    }

    public func snapshot() throws -> Snapshot {
        let files = try self.files()
        return Snapshot(files: files, digest: Self.digest(files.map { ($0.name, Self.fileDigest($0.text)) }))
    }

    /// Every file and its text, without the digest (a reader that only
    /// looks for some resources does not hash megabytes of policies).
    /// A file removed between the listing and its read is skipped, as a
    /// listing taken a moment later would not have named it: writers
    /// replace and remove files while others read (a CNI DEL beside an ADD).
    /// Never part of a commit (see `change`).
    public func files() throws -> [(name: String, text: String)] {
        try DirectoryCommit(directory: directory).read { _ in
            try fileNames().compactMap { name in try readIfPresent(name).map { (name, $0) } }
        }
    }

    /// The datastore's files: `*.yaml` and `*.yml`, not hidden, sorted.
    public func fileNames() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory).filter(Self.isResourceFile).sorted()
    }

    /// Whether a directory entry of this name is read: `*.yaml` and `*.yml`, not hidden.
    static func isResourceFile(_ name: String) -> Bool {
        !name.hasPrefix(".") && (name.hasSuffix(".yaml") || name.hasSuffix(".yml"))
    }

    func read(_ name: String) throws -> String {
        guard let text = try readIfPresent(name) else {
            throw CocoaError(.fileReadNoSuchFile, userInfo: [NSFilePathErrorKey: directory + "/" + name])
        }
        return text
    }

    /// The file's text, or nil when it does not exist.
    public func readIfPresent(_ name: String) throws -> String? {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: directory).appendingPathComponent(name))
        } catch let error as CocoaError where error.code == .fileReadNoSuchFile {
            return nil
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ValidationErrors([ValidationError(file: name, resource: "", field: "", reason: "not UTF-8 text")])
        }
        return text
    }

    /// Loads and validates everything: a batch is all or nothing.
    public func load() throws -> (ResourceSet, digest: String) {
        let snap = try snapshot()
        return (try ResourceSet.decode(files: snap.files), snap.digest)
    }

    /// FNV-1a of a file's content: cheap, stable across processes.
    static func fileDigest(_ text: String) -> UInt64 { fnv(text.utf8) }

    /// The datastore's digest, from every file's name and content digest:
    /// equal digests, equal input. A sum over files, so a reader that keeps
    /// per-file digests updates it as files change, without reading
    /// unchanged files again or sorting them.
    static func digest(_ files: [(name: String, digest: UInt64)]) -> String {
        digest(sum: files.reduce(0) { $0 &+ entryDigest($1.name, $1.digest) })
    }

    static func digest(sum: UInt64) -> String { String(sum, radix: 16) }

    /// One file's share of the datastore's digest.
    static func entryDigest(_ name: String, _ digest: UInt64) -> UInt64 {
        fnv(Array(name.utf8) + [0] + (0..<8).map { UInt8(truncatingIfNeeded: digest >> ($0 * 8)) })
    }

    static func fnv(_ bytes: some Sequence<UInt8>) -> UInt64 {
        func hash(_ bytes: some Sequence<UInt8>) -> UInt64 {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in bytes { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
            return h
        }
        // Over contiguous bytes where there are some: iterating a String's
        // UTF8View a byte at a time was most of a CNI ADD's datastore read.
        return bytes.withContiguousStorageIfAvailable { hash($0) } ?? hash(bytes)
    }

    /// Writes a file atomically and durably: a temporary file of this
    /// process, flushed to disk, renamed over the old one, then the
    /// directory flushed. A watcher never reads half a file, and after a
    /// crash the file is the old or the new one (IPAM blocks rely on it:
    /// an allocation rolled back would be handed out twice).
    public func write(_ name: String, _ text: String) throws {
        let dir = URL(fileURLWithPath: directory)
        let tmp = dir.appendingPathComponent(".\(name).\(getpid()).tmp")
        let target = dir.appendingPathComponent(name)
        func fail(_ what: String) -> Error {
            let code = errno
            _ = unlink(tmp.path)
            return CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: target.path,
                                                            NSLocalizedDescriptionKey: "\(what): \(String(cString: strerror(code)))"])
        }
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("cannot create \(tmp.path)") }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        do {
            try handle.write(contentsOf: Data(text.utf8))
            try handle.synchronize() // fsync
            try handle.close()
        } catch {
            _ = unlink(tmp.path)
            throw error
        }
        guard rename(tmp.path, target.path) == 0 else { throw fail("cannot rename to \(target.path)") }
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 { _ = fsync(dirFD); close(dirFD) }
    }

    public func remove(_ name: String) throws {
        let url = URL(fileURLWithPath: directory).appendingPathComponent(name)
        if FileManager.default.fileExists(atPath: url.path) { try FileManager.default.removeItem(at: url) }
    }
}
