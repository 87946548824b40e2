import Foundation

/// Makes a change of several files in a directory datastore atomic for its
/// readers, with a commit record, `.manx-commit`, beside the files:
///
/// 1. The writer takes `.manx-commit.lock` (flock, held to the end), and
///    writes each new file as a hidden temporary, flushed to disk.
/// 2. It replaces the record with "pending", the next generation, and the
///    names it will write and remove. This rename is the commit point.
/// 3. It renames the temporaries into place and removes the files.
/// 4. It replaces the record with "done", same generation and names.
///
/// A reader (`read`) reads the record before and after it reads files, and
/// keeps what it read only when the record was "done" both times at one
/// generation: no rename of a commit can fall inside its read. While the
/// record is pending the reader waits; a pending record whose writer is
/// gone (its lock is free) is rolled forward by whoever sees it first, so
/// a writer that crashes after the commit point still lands whole, and one
/// that crashes before it lands nothing.
///
/// Files written without a record (a CNI plugin's endpoint, an operator's
/// `cp`) are each atomic on their own, as before.
struct DirectoryCommit {
    let directory: String

    var recordPath: String { directory + "/.manx-commit" }
    var lockPath: String { directory + "/.manx-commit.lock" }

    struct Record: Equatable {
        var generation: UInt64 = 0
        var pending = false
        var writes: [String] = []
        var removes: [String] = []

        var text: String {
            (["generation \(generation)", pending ? "pending" : "done"] + writes.map { "write \($0)" } + removes.map { "remove \($0)" })
                .joined(separator: "\n") + "\n"
        }

        /// A record this code did not write (edited by hand, truncated) is
        /// not trusted: reading fails rather than guess what is committed.
        init?(text: String) {
            var lines = text.split(separator: "\n").map(String.init)
            guard lines.count >= 2, lines[0].hasPrefix("generation "), let generation = UInt64(lines[0].dropFirst(11)),
                  lines[1] == "pending" || lines[1] == "done" else { return nil }
            self.generation = generation
            pending = lines[1] == "pending"
            lines.removeFirst(2)
            for line in lines {
                if line.hasPrefix("write ") { writes.append(String(line.dropFirst(6))) }
                else if line.hasPrefix("remove ") { removes.append(String(line.dropFirst(7))) }
                else { return nil }
            }
        }

        init(generation: UInt64, pending: Bool, writes: [String], removes: [String]) {
            (self.generation, self.pending, self.writes, self.removes) = (generation, pending, writes, removes)
        }

        /// Every name the commit touched.
        var names: Set<String> { Set(writes).union(removes) }
    }

    struct CommitError: Error, CustomStringConvertible {
        var description: String
    }

    /// The record; generation 0, done, when there has never been a commit.
    func record() throws -> Record {
        guard let data = FileManager.default.contents(atPath: recordPath) else { return Record(generation: 0, pending: false, writes: [], removes: []) }
        guard let record = Record(text: String(decoding: data, as: UTF8.self)) else {
            throw CommitError(description: "\(recordPath) is not a commit record Manx wrote; remove it only when no bpfctl apply is running")
        }
        return record
    }

    /// Runs `body` (which reads files) until no commit overlapped it, and
    /// returns its result. `body` is given the record in force, and may run
    /// more than once, so it must not keep state between runs.
    func read<T>(_ body: (Record) throws -> T) throws -> T {
        var waited = 0
        while true {
            let first = try record()
            if first.pending {
                // A writer between its commit point and "done": renames take
                // microseconds, so poll; roll forward if the writer is gone.
                if try !rollForwardIfAbandoned() {
                    waited += 1
                    usleep(waited < 100 ? 200 : 5000)
                }
                continue
            }
            let value = try body(first)
            if try record() == first { return value }
        }
    }

    /// Holds the writers' lock while `body` runs (and rolls forward a
    /// commit a crashed writer left pending, first).
    func withLock<T>(_ body: () throws -> T) throws -> T {
        let fd = try openLock()
        defer { close(fd) } // releases the lock
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw CommitError(description: "cannot lock \(lockPath): \(Self.errnoText())") }
        }
        try finishPending()
        return try body()
    }

    /// Writes and removes files as one commit. Call within `withLock`.
    func commit(writes: [String: String], removes: [String]) throws {
        let previous = try record()
        let next = Record(generation: previous.generation + 1, pending: true, writes: writes.keys.sorted(), removes: removes.sorted())
        for (name, text) in writes { try writeDurably(temporary(name, next.generation), Data(text.utf8)) }
        try replaceRecord(next)
        try finish(next)
    }

    /// Steps 3 and 4 of a commit; idempotent, so a roll forward repeats
    /// them after a crash anywhere between.
    private func finish(_ record: Record) throws {
        for name in record.writes {
            let tmp = temporary(name, record.generation)
            if rename(tmp, directory + "/" + name) != 0, errno != ENOENT {
                throw CommitError(description: "cannot rename \(tmp) into place: \(Self.errnoText())")
            }
        }
        for name in record.removes where unlink(directory + "/" + name) != 0 && errno != ENOENT {
            throw CommitError(description: "cannot remove \(directory)/\(name): \(Self.errnoText())")
        }
        syncDirectory()
        var done = record
        done.pending = false
        try replaceRecord(done)
    }

    private func finishPending() throws {
        let current = try record()
        if current.pending { try finish(current) }
    }

    /// With the lock free (no writer alive), finishes a pending commit.
    /// Returns whether the lock could be had.
    private func rollForwardIfAbandoned() throws -> Bool {
        let fd = try openLock()
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { return false }
        try finishPending()
        return true
    }

    private func openLock() throws -> Int32 {
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CommitError(description: "cannot open \(lockPath): \(Self.errnoText())") }
        return fd
    }

    private func temporary(_ name: String, _ generation: UInt64) -> String {
        "\(directory)/.\(name).commit-\(generation).tmp"
    }

    private func replaceRecord(_ record: Record) throws {
        let tmp = recordPath + ".tmp"
        try writeDurably(tmp, Data(record.text.utf8))
        guard rename(tmp, recordPath) == 0 else { throw CommitError(description: "cannot rename \(tmp): \(Self.errnoText())") }
        syncDirectory()
    }

    private func writeDurably(_ path: String, _ data: Data) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CommitError(description: "cannot create \(path): \(Self.errnoText())") }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        try handle.write(contentsOf: data)
        try handle.synchronize()
        try handle.close()
    }

    private func syncDirectory() {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { _ = fsync(fd); close(fd) }
    }

    static func errnoText() -> String {
        let code = errno
        return "\(String(cString: strerror(code))) (errno \(code))"
    }
}
