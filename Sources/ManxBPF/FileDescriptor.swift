import Glibc

/// An owned file descriptor, closed when the last reference goes away.
/// Map and program descriptors are safe to use from many threads.
public final class FileDescriptor: Sendable {
    public let raw: Int32

    public init(owning raw: Int32) { self.raw = raw }

    /// Duplicates a descriptor someone else owns (libbpf's, for example).
    public init(duplicating raw: Int32, _ operation: String) throws(BPFError) {
        let fd = fcntl(raw, F_DUPFD_CLOEXEC, 0)
        if fd < 0 { throw BPFError(operation, errno: errno) }
        self.raw = fd
    }

    deinit { close(raw) }
}
