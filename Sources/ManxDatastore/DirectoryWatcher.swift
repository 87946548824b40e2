import Glibc

/// Waits for changes in a directory with inotify, and says which entries
/// they were about. Events already queued when it wakes are drained
/// together; it does not wait for more.
public final class DirectoryWatcher: @unchecked Sendable {
    private let fd: Int32

    public init(directory: String) throws {
        fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { throw WatchError(reason: "inotify_init1: \(String(cString: strerror(errno)))") }
        let mask = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_ATTRIB
                          | IN_DELETE_SELF | IN_MOVE_SELF)
        guard inotify_add_watch(fd, directory, mask) >= 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw WatchError(reason: "inotify_add_watch \(directory): \(reason)")
        }
    }

    deinit { close(fd) }

    public struct WatchError: Error, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    /// What changed in the directory.
    public enum Change: Equatable {
        /// Nothing, within the timeout.
        case none
        /// Entries of these names were created, written, moved or removed.
        case names(Set<String>)
        /// Events were lost, or the directory itself went: read all of it.
        case unknown
    }

    /// Blocks up to `timeoutMs` for a change; then drains the events queued
    /// (it does not wait for more: a reader that decodes only changed files
    /// gains nothing by waiting) and returns the names they are about.
    public func wait(timeoutMs: Int32) -> Change {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, timeoutMs) > 0 else { return .none }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var names = Set<String>()
        var unknown = false
        while true {
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { break }
            // struct inotify_event: wd, mask, cookie, len, then len bytes of
            // NUL-padded name.
            var at = 0
            while at + 16 <= n {
                let (mask, length) = buffer.withUnsafeBytes { raw in
                    (raw.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self), Int(raw.loadUnaligned(fromByteOffset: at + 12, as: UInt32.self)))
                }
                if mask & UInt32(IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF) != 0 { unknown = true }
                let name = buffer[(at + 16)..<min(at + 16 + length, n)].prefix { $0 != 0 }
                if !name.isEmpty { names.insert(String(decoding: name, as: UTF8.self)) }
                at += 16 + length
            }
        }
        return unknown ? .unknown : .names(names)
    }
}
