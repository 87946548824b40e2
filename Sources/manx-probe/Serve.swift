// `serve`: TCP "ok" responder, UDP echo and SCTP INIT-ACK emulation on every
// requested port, all multiplexed with poll() on a single thread.
import Glibc

/// Write end of the self-pipe. The signal handler is a C function pointer and
/// cannot capture context, so this one fd lives in a global; it is set before
/// the handlers are installed and never changes afterwards.
nonisolated(unsafe) private var signalPipeWrite: Int32 = -1

private enum Listener { case tcp, udp, sctp, signal }

/// Binds a non-blocking socket on 0.0.0.0:port (and listens, for TCP).
private func bound(_ type: __socket_type, _ port: UInt16) -> Int32 {
    let fd = makeSocket(type)
    guard fd >= 0 else { die("socket") }
    var one: Int32 = 1
    if type == SOCK_STREAM {  // lets the runner restart servers despite TIME_WAIT
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    }
    let proto = type == SOCK_STREAM ? "tcp" : "udp"
    guard withSockaddr(0, port, { bind(fd, $0, $1) }) == 0 else { die("bind \(proto) port \(port)") }
    if type == SOCK_STREAM && listen(fd, 128) != 0 { die("listen tcp port \(port)") }
    return fd
}

func serve(ports: [UInt16], readyFile: String?) -> Never {
    // A stale ready file from an earlier run must not signal readiness early.
    if let path = readyFile { unlink(path) }

    var fds: [pollfd] = []
    var kinds: [Listener] = []
    func add(_ fd: Int32, _ kind: Listener) {
        fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
        kinds.append(kind)
    }
    for port in ports {
        add(bound(SOCK_STREAM, port), .tcp)
        add(bound(SOCK_DGRAM, port), .udp)
    }
    // One raw socket sees every inbound protocol-132 packet; it replies with
    // IP_HDRINCL so the INIT-ACK comes from exactly the address the INIT was
    // sent to (not whatever source the routing table would pick).
    let raw = makeSocket(SOCK_RAW, sctpProtocol)
    guard raw >= 0 else { die("raw sctp socket (need CAP_NET_RAW)") }
    var one: Int32 = 1
    guard setsockopt(raw, Int32(IPPROTO_IP), IP_HDRINCL, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else { die("IP_HDRINCL") }
    add(raw, .sctp)

    // Self-pipe: SIGTERM/SIGINT wake poll() instead of killing us mid-reply.
    var pipeFds: [Int32] = [0, 0]
    guard pipe(&pipeFds) == 0 else { die("pipe") }
    _ = fcntl(pipeFds[1], F_SETFL, O_NONBLOCK)  // a full pipe must never block the handler
    signalPipeWrite = pipeFds[1]
    add(pipeFds[0], .signal)
    let onSignal: @convention(c) (Int32) -> Void = { _ in
        var b: UInt8 = 1
        _ = write(signalPipeWrite, &b, 1)  // async-signal-safe
    }
    signal(SIGTERM, onSignal)
    signal(SIGINT, onSignal)
    signal(SIGPIPE, SIG_IGN)  // a peer resetting early must not kill the server

    // Everything is bound: publish readiness atomically (write tmp + rename).
    if let path = readyFile {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { die("create \(tmp)") }
        let pid = "\(getpid())\n"
        _ = pid.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        guard rename(tmp, path) == 0 else { die("rename \(tmp)") }
    }

    let portSet = Set(ports)
    var buf = [UInt8](repeating: 0, count: 65_536)
    loop: while true {
        if poll(&fds, nfds_t(fds.count), -1) < 0 {
            if errno == EINTR { continue }  // the handler already wrote to the pipe
            die("poll")
        }
        for i in fds.indices where fds[i].revents != 0 {
            let fd = fds[i].fd
            switch kinds[i] {
            case .signal:
                break loop
            case .tcp:
                // Drain the accept queue; each client gets "ok" and a FIN.
                while true {
                    let c = accept(fd, nil, nil)
                    if c < 0 { break }
                    _ = send(c, "ok", 2, Int32(MSG_NOSIGNAL))
                    close(c)
                }
            case .udp:
                // Echo each datagram to its sender; the socket is bound to the port,
                // so the reply's source port is the one the client targeted.
                var from = sockaddr_storage()
                var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                while true {
                    let n = withUnsafeMutablePointer(to: &from) { sa in
                        sa.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buf, buf.count, 0, $0, &len) }
                    }
                    if n < 0 { break }
                    _ = withUnsafePointer(to: &from) { sa in
                        sa.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, buf, n, 0, $0, len) }
                    }
                    len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                }
            case .sctp:
                while let packet = recvPacket(fd, &buf) {
                    answerInit(packet, on: fd, ports: portSet)
                }
            }
        }
    }
    for p in fds { close(p.fd) }
    if let path = readyFile { unlink(path) }
    exit(0)
}

/// Replies to a valid INIT on one of our ports with an INIT-ACK whose
/// verification tag is the INIT's initiate tag. Everything else (other ports,
/// other chunk types, our own traffic) is ignored, like a closed port silently
/// dropping would look from outside.
private func answerInit(_ packet: [UInt8], on fd: Int32, ports: Set<UInt16>) {
    guard let p = parseSCTP(packet), p.chunkType == chunkInit, p.vtag == 0,
          let peerTag = p.initiateTag, peerTag != 0, ports.contains(p.dstPort) else { return }
    // INIT-ACK must carry a State Cookie (param type 7); its content is opaque.
    var cookie = be16(7) + be16(12)
    cookie += be32(UInt32.random(in: 0...UInt32.max)) + be32(peerTag)
    let chunk = initChunk(type: chunkInitAck, initiateTag: UInt32.random(in: 1...UInt32.max), params: cookie)
    let sctp = sctpPacket(srcPort: p.dstPort, dstPort: p.srcPort, vtag: peerTag, chunk: chunk)
    // IPv4 header: the kernel fills in total length, ID and header checksum.
    var ip: [UInt8] = [0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, UInt8(sctpProtocol), 0, 0]
    ip += p.dstIP
    ip += p.srcIP
    let out = ip + sctp
    _ = withSockaddr(ipAddr(p.srcIP), 0) { sendto(fd, out, out.count, 0, $0, $1) }
}
