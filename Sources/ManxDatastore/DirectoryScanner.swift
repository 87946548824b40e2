import Foundation

/// Scans a directory datastore again and again and reports the files whose
/// content changed since the last scan (told by inode, size and
/// modification and change times), so only those are read. Writers replace
/// files by renaming, so a changed file always shows a new inode or time.
final class DirectoryScanner {
    let datastore: DirectoryDatastore
    private var stamps: [String: Stamp] = [:]
    /// The commit generation of the last scan.
    private var generation: UInt64?

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

    init(_ datastore: DirectoryDatastore) { self.datastore = datastore }

    /// Files changed since the last scan: their text, or nil if removed.
    /// The first scan reports every file. With `names`, only those entries
    /// are looked at (what the directory's events were about); the others
    /// are as they were. A scan never sees part of a commit (several files
    /// `bpfctl apply` changes at once); after one, it reads every file the
    /// commit touched, so their changes come in one report.
    func scan(only names: Set<String>? = nil) throws -> [String: String?] {
        let (scanned, generation) = try DirectoryCommit(directory: datastore.directory).read { record in
            guard var names else { return (try scan(try datastore.fileNames(), all: true), record.generation) }
            if record.generation != self.generation { names.formUnion(record.names) }
            return (try scan(names.filter(DirectoryDatastore.isResourceFile).sorted(), all: false), record.generation)
        }
        (stamps, self.generation) = (scanned.1, generation)
        return scanned.0
    }

    /// The changes, and the stamps after them (kept by the caller once the
    /// read is known to be whole).
    private func scan(_ listed: [String], all: Bool) throws -> ([String: String?], [String: Stamp]) {
        var changes: [String: String?] = [:]
        var next: [String: Stamp] = all ? [:] : stamps
        for name in listed {
            guard var stamp = stamp(name) else { // removed (meanwhile)
                if !all, stamps[name] != nil {
                    changes[name] = .some(nil)
                    next[name] = nil
                }
                continue
            }
            if stamps[name] != stamp {
                // Read until the file holds still across the read; a file
                // removed meanwhile is gone, as if it had not been listed.
                guard var text = try datastore.readIfPresent(name) else { continue }
                // (Removed during this loop: the next scan reports it.)
                while let again = self.stamp(name), again != stamp,
                      let reread = try datastore.readIfPresent(name) {
                    stamp = again
                    text = reread
                }
                changes[name] = .some(text)
            }
            next[name] = stamp
        }
        if all { for name in stamps.keys where next[name] == nil { changes[name] = .some(nil) } }
        return (changes, next)
    }

    private func stamp(_ name: String) -> Stamp? {
        var st = stat()
        guard stat("\(datastore.directory)/\(name)", &st) == 0 else { return nil }
        return Stamp(inode: UInt64(st.st_ino), size: Int64(st.st_size), modified: st.st_mtim, changed: st.st_ctim)
    }
}
