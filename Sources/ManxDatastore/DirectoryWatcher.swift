import Glibc

/// Waits for changes in a directory with inotify. Events already queued
/// when it wakes are drained together; it does not wait for more.
public final class DirectoryWatcher: @unchecked Sendable {
    private let fd: Int32

    public init(directory: String) throws {
        fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { throw WatchError(reason: "inotify_init1: \(String(cString: strerror(errno)))") }
        let mask = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_ATTRIB)
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

    /// Blocks up to `timeoutMs` for a change; then drains the events queued
    /// and those arriving within `settleMs` (none by default: a reader that
    /// decodes only changed files gains nothing by waiting). Returns whether
    /// anything changed.
    public func wait(timeoutMs: Int32, settleMs: Int32 = 0) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, timeoutMs) > 0 else { return false }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        repeat {
            while read(fd, &buffer, buffer.count) > 0 {}
            pfd.revents = 0
        } while poll(&pfd, 1, settleMs) > 0
        return true
    }
}
