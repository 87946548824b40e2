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

    /// Writes a file atomically (temporary file, then rename), so a watcher
    /// never reads half of it.
    public func write(_ name: String, _ text: String) throws {
        let dir = URL(fileURLWithPath: directory)
        let tmp = dir.appendingPathComponent(".\(name).tmp")
        try text.write(to: tmp, atomically: false, encoding: .utf8)
        guard rename(tmp.path, dir.appendingPathComponent(name).path) == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: name])
        }
    }

    public func remove(_ name: String) throws {
        let url = URL(fileURLWithPath: directory).appendingPathComponent(name)
        if FileManager.default.fileExists(atPath: url.path) { try FileManager.default.removeItem(at: url) }
    }
}
