// Small socket helpers shared by serve and probe (IPv4 only).
import Glibc

/// Writes a line to stderr via write(2); the C `stderr` global is not
/// concurrency-safe to touch in Swift 6 mode.
func eprint(_ s: String) {
    let line = s + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

func die(_ s: String) -> Never {
    eprint("manx-probe: \(s): \(String(cString: strerror(errno)))")
    exit(1)
}

/// Dotted-quad IPv4 to in_addr_t (network byte order); nil if invalid.
func parseIPv4(_ s: String) -> in_addr_t? {
    var a = in_addr()
    return inet_pton(AF_INET, s, &a) == 1 ? a.s_addr : nil
}

/// The 4 wire bytes of an address, for comparing with raw IP headers.
func ipBytes(_ a: in_addr_t) -> [UInt8] { withUnsafeBytes(of: a) { Array($0) } }
func ipAddr(_ b: ArraySlice<UInt8>) -> in_addr_t { Array(b).withUnsafeBytes { $0.loadUnaligned(as: in_addr_t.self) } }

/// Calls `body` with a sockaddr_in for ip:port, as the sockaddr pointer the C APIs want.
func withSockaddr<R>(_ ip: in_addr_t, _ port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    sa.sin_addr.s_addr = ip
    return withUnsafePointer(to: &sa) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

/// Every socket is non-blocking: both commands multiplex everything with poll() on one thread.
func makeSocket(_ type: __socket_type, _ proto: Int32 = 0) -> Int32 {
    socket(AF_INET, Int32(type.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), proto)
}

/// Non-blocking receive of one datagram/packet; nil when nothing is queued (or on error).
func recvPacket(_ fd: Int32, _ buf: inout [UInt8]) -> [UInt8]? {
    let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
    return n >= 0 ? Array(buf[0..<n]) : nil
}

/// Short, stable failure reasons for the probe output.
func reason(_ err: Int32) -> String {
    switch err {
    case ECONNREFUSED: return "refused"
    case ENETUNREACH, EHOSTUNREACH: return "unreachable"
    case ETIMEDOUT: return "timeout"
    case EPERM, EACCES: return "denied"
    default: return "errno-\(err)"
    }
}

/// Monotonic milliseconds, so deadlines are immune to wall-clock jumps.
func nowMs() -> Int {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}
