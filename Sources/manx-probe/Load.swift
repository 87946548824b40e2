// Load generators for benchmarks: new-connection rate and request/response
// latency against a `serve` instance. Each prints one JSON object.
import Glibc

private func seconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// connect, a 1-byte request, read the reply until the server closes, close:
/// as many times as fit in `duration`. Each connection is a new flow, so
/// this is where per-connection policy cost shows.
func connectionRate(_ ip: in_addr_t, _ port: UInt16, duration: Double) -> Never {
    var ok = 0, failed = 0
    var buf = [UInt8](repeating: 0, count: 64)
    let end = seconds() + duration
    var timeout = timeval(tv_sec: 1, tv_usec: 0)
    // RST on close: no TIME_WAIT on the client, so ports are not exhausted.
    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
    while seconds() < end {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { die("socket") }
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        if withSockaddr(ip, port, { connect(fd, $0, $1) }) == 0 {
            var request: UInt8 = 0x71
            _ = send(fd, &request, 1, Int32(MSG_NOSIGNAL))
            var got = 0
            while true {
                let n = recv(fd, &buf, buf.count, 0)
                if n <= 0 { break }
                got += n
            }
            if got > 0 { ok += 1 } else { failed += 1 }
        } else {
            failed += 1
        }
        close(fd)
    }
    print("{\"connections\": \(ok), \"failed\": \(failed), \"seconds\": \(duration), \"rate\": \(Double(ok) / duration)}")
    exit(0)
}

/// One UDP flow: a 1-byte request and its echo, back to back; reports the
/// round-trip latency percentiles in microseconds.
func requestResponse(_ ip: in_addr_t, _ port: UInt16, duration: Double) -> Never {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0, withSockaddr(ip, port, { connect(fd, $0, $1) }) == 0 else { die("udp connect") }
    var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var samples: [Double] = []
    samples.reserveCapacity(200_000)
    var lost = 0
    var byte: UInt8 = 0x72
    var reply = [UInt8](repeating: 0, count: 16)
    let end = seconds() + duration
    while seconds() < end {
        let t0 = seconds()
        _ = send(fd, &byte, 1, 0)
        if recv(fd, &reply, reply.count, 0) > 0 { samples.append((seconds() - t0) * 1e6) } else { lost += 1 }
    }
    samples.sort()
    func pct(_ p: Double) -> Double { samples.isEmpty ? 0 : samples[min(samples.count - 1, Int(Double(samples.count) * p))] }
    print("{\"requests\": \(samples.count), \"lost\": \(lost), \"p50_us\": \(pct(0.5)), \"p99_us\": \(pct(0.99))}")
    exit(0)
}
