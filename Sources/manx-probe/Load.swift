// Load generators for benchmarks: new-connection rate and request/response
// latency against a `serve` instance. Each prints one JSON object.
import Glibc

private func seconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// connect, a 1-byte request, read the reply until the server closes, close:
/// as many times as fit in `duration`, with `parallel` connections in flight
/// (non-blocking sockets, one poll loop), so the rate is not bounded by one
/// round trip of scheduling between the namespaces. Each connection is a new
/// flow, so this is where per-connection policy cost shows.
func connectionRate(_ ip: in_addr_t, _ port: UInt16, duration: Double, parallel: Int) -> Never {
    var ok = 0, failed = 0
    var buf = [UInt8](repeating: 0, count: 64)
    // RST on close: no TIME_WAIT on the client, so ports are not exhausted.
    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
    func open() -> pollfd {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { die("socket") }
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        _ = withSockaddr(ip, port, { connect(fd, $0, $1) })
        return pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
    }
    var slots = (0..<parallel).map { _ in open() }
    var started = [Double](repeating: seconds(), count: parallel)
    var received = [Int](repeating: 0, count: parallel)
    let end = seconds() + duration
    while seconds() < end {
        _ = poll(&slots, nfds_t(slots.count), 100)
        let now = seconds()
        for i in slots.indices {
            var finished = false
            if slots[i].revents & Int16(POLLOUT) != 0 {
                var err: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(slots[i].fd, SOL_SOCKET, SO_ERROR, &err, &len)
                var request: UInt8 = 0x71
                if err == 0 && send(slots[i].fd, &request, 1, Int32(MSG_NOSIGNAL)) >= 0 {
                    slots[i].events = Int16(POLLIN)
                } else {
                    failed += 1
                    finished = true
                }
            } else if slots[i].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                // The reply, then the server closes (a FIN, or a reset because
                // it did not read our byte): a success if the reply came.
                while true {
                    let n = recv(slots[i].fd, &buf, buf.count, 0)
                    if n > 0 { received[i] += n; continue }
                    if n == 0 || errno != EAGAIN {
                        if received[i] > 0 { ok += 1 } else { failed += 1 }
                        finished = true
                    }
                    break
                }
            } else if now - started[i] > 1 {
                failed += 1 // dropped by policy, or lost
                finished = true
            }
            slots[i].revents = 0
            if finished {
                close(slots[i].fd)
                slots[i] = open()
                started[i] = now
                received[i] = 0
            }
        }
    }
    print("{\"connections\": \(ok), \"failed\": \(failed), \"seconds\": \(duration), \"parallel\": \(parallel), \"rate\": \(Double(ok) / duration)}")
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
