// `probe`: runs every target concurrently (non-blocking sockets + one poll()
// loop) against a single shared deadline, then prints one line per target in
// input order.
import Glibc

enum Proto: String { case tcp, udp, sctp }

struct Target {
    let text: String  // echoed verbatim in the output
    let proto: Proto
    let ip: in_addr_t
    let port: UInt16
}

/// One in-flight probe. `result` stays nil until the probe is decided.
private struct Attempt {
    let target: Target
    var fd: Int32 = -1
    var result: String?
    var sctpPort: UInt16 = 0  // our random source port
    var sctpTag: UInt32 = 0   // our random initiate tag
    var udpSize = 0           // bytes the UDP echo must bring back
}

/// Opens the socket and sends the first packet. Failures that are known
/// immediately (e.g. no route, no CAP_NET_RAW) decide the attempt at once.
/// A UDP probe sends `udpSize` bytes (more than the MTU: the datagram goes
/// in fragments) and passes only when the whole echo comes back.
private func start(_ t: Target, udpSize: Int) -> Attempt {
    var a = Attempt(target: t)
    func fail(_ what: Int32) -> Attempt { a.result = "fail \(reason(what))"; return a }
    switch t.proto {
    case .tcp:
        a.fd = makeSocket(SOCK_STREAM)
        guard a.fd >= 0 else { return fail(errno) }
        if withSockaddr(t.ip, t.port, { connect(a.fd, $0, $1) }) == 0 {
            a.result = "ok"  // loopback can connect synchronously
        } else if errno != EINPROGRESS {
            return fail(errno)
        }
    case .udp:
        // connect() makes the kernel report ICMP port-unreachable as
        // ECONNREFUSED and drop datagrams from anyone but the target.
        a.fd = makeSocket(SOCK_DGRAM)
        guard a.fd >= 0 else { return fail(errno) }
        guard withSockaddr(t.ip, t.port, { connect(a.fd, $0, $1) }) == 0,
              send(a.fd, [UInt8](repeating: 0x6d, count: udpSize), udpSize, Int32(MSG_NOSIGNAL)) >= 0 else { return fail(errno) }
        a.udpSize = udpSize
    case .sctp:
        a.fd = makeSocket(SOCK_RAW, sctpProtocol)
        guard a.fd >= 0 else { return fail(errno) }
        a.sctpPort = UInt16.random(in: 1024...65_535)
        a.sctpTag = UInt32.random(in: 1...UInt32.max)  // 0 is forbidden by RFC 9260
        // An INIT always carries verification tag 0 in its common header.
        let pkt = sctpPacket(srcPort: a.sctpPort, dstPort: t.port, vtag: 0,
                             chunk: initChunk(type: chunkInit, initiateTag: a.sctpTag))
        guard withSockaddr(t.ip, 0, { sendto(a.fd, pkt, pkt.count, 0, $0, $1) }) >= 0 else { return fail(errno) }
    }
    return a
}

/// Handles poll readiness for an undecided attempt.
private func advance(_ a: inout Attempt, _ buf: inout [UInt8]) {
    switch a.target.proto {
    case .tcp:
        // Writable means the handshake finished; SO_ERROR says how.
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(a.fd, SOL_SOCKET, SO_ERROR, &err, &len)
        a.result = err == 0 ? "ok" : "fail \(reason(err))"
    case .udp:
        // Any reply passes; a queued ICMP error surfaces as recv() failing.
        if let reply = recvPacket(a.fd, &buf) {
            a.result = reply.count == a.udpSize ? "ok" : "fail short-echo-\(reply.count)"
        } else if errno != EAGAIN && errno != EWOULDBLOCK {
            a.result = "fail \(reason(errno))"
        }
    case .sctp:
        // Every raw protocol-132 socket gets a copy of every SCTP packet
        // (including other targets' replies and our own INITs on loopback),
        // so only accept the exact answer to our INIT.
        let from = ipBytes(a.target.ip)
        while let pkt = recvPacket(a.fd, &buf) {
            guard let p = parseSCTP(pkt), Array(p.srcIP) == from, p.srcPort == a.target.port,
                  p.dstPort == a.sctpPort, p.vtag == a.sctpTag else { continue }
            if p.chunkType == chunkInitAck { a.result = "ok"; return }
            if p.chunkType == chunkAbort { a.result = "fail refused"; return }  // real SCTP stacks abort closed ports
        }
    }
}

func probe(_ targets: [Target], timeoutMs: Int, udpSize: Int = 10) -> Never {
    var attempts = targets.map { start($0, udpSize: udpSize) }
    let deadline = nowMs() + timeoutMs
    var buf = [UInt8](repeating: 0, count: 65_536)
    while true {
        let pending = attempts.indices.filter { attempts[$0].result == nil }
        let left = deadline - nowMs()
        if pending.isEmpty || left <= 0 { break }
        var fds = pending.map { i in
            pollfd(fd: attempts[i].fd, events: Int16(attempts[i].target.proto == .tcp ? POLLOUT : POLLIN), revents: 0)
        }
        if poll(&fds, nfds_t(fds.count), Int32(left)) < 0 && errno != EINTR { die("poll") }
        for (k, i) in pending.enumerated() where fds[k].revents != 0 {
            advance(&attempts[i], &buf)
        }
    }
    for a in attempts {
        print("\(a.target.text) \(a.result ?? "fail timeout")")
        if a.fd >= 0 { close(a.fd) }
    }
    exit(0)
}
