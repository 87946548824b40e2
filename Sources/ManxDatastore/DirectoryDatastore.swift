import Foundation
import ManxModel

/// The default datastore: a directory of YAML files (`*.yaml`, `*.yml`),
/// each holding one or more documents. Hidden files and editor temporaries
/// are ignored, so writers can stage a file and rename it into place.
public struct DirectoryDatastore: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    public struct Snapshot: Sendable {
        public var files: [(name: String, text: String)]
        /// A digest of every file's name and content: equal digests, equal input.
        public var digest: String
    }

    public func snapshot() throws -> Snapshot {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { !$0.hasPrefix(".") && ($0.hasSuffix(".yaml") || $0.hasSuffix(".yml")) }
            .sorted()
        var files: [(String, String)] = []
        for name in names {
            let data = try Data(contentsOf: URL(fileURLWithPath: directory).appendingPathComponent(name))
            guard let text = String(data: data, encoding: .utf8) else {
                throw ValidationErrors([ValidationError(file: name, resource: "", field: "", reason: "not UTF-8 text")])
            }
            files.append((name, text))
        }
        return Snapshot(files: files, digest: Self.digest(files))
    }

    /// Loads and validates everything: a batch is all or nothing.
    public func load() throws -> (ResourceSet, digest: String) {
        let snap = try snapshot()
        return (try ResourceSet.decode(files: snap.files), snap.digest)
    }

    /// FNV-1a over names and contents: cheap, stable across processes.
    static func digest(_ files: [(String, String)]) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for (name, text) in files {
            for byte in name.utf8 + [0] + text.utf8 + [0] {
                h = (h ^ UInt64(byte)) &* 0x100_0000_01b3
            }
        }
        return String(h, radix: 16)
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
