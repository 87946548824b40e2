import Foundation
import ManxModel

/// Reads a directory datastore again and again, decoding only the files
/// whose content changed since the last read (told by inode, size and
/// modification and change times); unchanged files keep their decoded
/// documents and content digest. Writers replace files by renaming, so a
/// changed file always shows a new inode or time.
public final class DirectoryReader {
    public let datastore: DirectoryDatastore
    private var cache: [String: Entry] = [:]

    struct Entry {
        var stamp: Stamp
        var digest: UInt64
        var decoded: ResourceSet.DecodedFile
    }

    struct Stamp: Equatable {
        var inode: UInt64
        var size: Int64
        var modified: timespec
        var changed: timespec

        static func == (a: Stamp, b: Stamp) -> Bool {
            a.inode == b.inode && a.size == b.size && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
                && a.changed.tv_sec == b.changed.tv_sec && a.changed.tv_nsec == b.changed.tv_nsec
        }
    }

    public init(_ datastore: DirectoryDatastore) { self.datastore = datastore }

    public struct Read {
        public var files: [ResourceSet.DecodedFile]
        /// The same digest as `DirectoryDatastore.snapshot()` gives.
        public var digest: String
        /// Files read and decoded this time (the others came from the cache).
        public var decodedFiles: Int
    }

    public func read() throws -> Read {
        var result = Read(files: [], digest: "", decodedFiles: 0)
        var digests: [(String, UInt64)] = []
        var next: [String: Entry] = [:]
        for name in try datastore.fileNames() {
            guard var stamp = stamp(name) else { continue } // removed meanwhile
            var entry = cache[name]
            if entry?.stamp != stamp {
                // Read until the file holds still across the read.
                var text = try datastore.read(name)
                while let again = self.stamp(name), again != stamp {
                    stamp = again
                    text = try datastore.read(name)
                }
                entry = Entry(stamp: stamp, digest: DirectoryDatastore.fileDigest(text),
                              decoded: ResourceSet.decodeFile(name: name, text: text))
                result.decodedFiles += 1
            }
            next[name] = entry
            digests.append((name, entry!.digest))
            result.files.append(entry!.decoded)
        }
        cache = next
        result.digest = DirectoryDatastore.digest(digests)
        return result
    }

    private func stamp(_ name: String) -> Stamp? {
        var st = stat()
        guard stat("\(datastore.directory)/\(name)", &st) == 0 else { return nil }
        return Stamp(inode: UInt64(st.st_ino), size: Int64(st.st_size), modified: st.st_mtim, changed: st.st_ctim)
    }
}
