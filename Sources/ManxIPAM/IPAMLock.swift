#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An flock(2) on `<datastore>/.ipam.lock`, taken around every read-modify-
/// write of the IPAM blocks. flock locks belong to the open file
/// description, so each call opens the file anew: two threads, or two CNI
/// processes on any node sharing the directory, exclude each other.
struct IPAMLock {
    let path: String

    func withLock<T>(exclusive: Bool, _ body: () throws(IPAMError) -> T) throws(IPAMError) -> T {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw IPAMError(.datastore, "cannot open the IPAM lock \(path): \(Self.errnoText())") }
        defer { close(fd) }
        while flock(fd, exclusive ? LOCK_EX : LOCK_SH) != 0 {
            if errno == EINTR { continue }
            throw IPAMError(.datastore, "cannot lock \(path): \(Self.errnoText())")
        }
        // Closing the descriptor releases the lock.
        return try body()
    }

    static func errnoText() -> String {
        let code = errno
        return "\(String(cString: strerror(code))) (errno \(code))"
    }
}
