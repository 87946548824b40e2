// A long-lived TCP flow, for tests of what happens to established flows:
// `echo` answers every byte on every connection; `hold` keeps one
// connection and sends a byte every interval, printing the wall-clock time
// (milliseconds) of each echo it gets back.
import Glibc

func echoServe(port: UInt16) -> Never {
    let listener = makeSocket(SOCK_STREAM)
    var one: Int32 = 1
    _ = setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    guard listener >= 0, withSockaddr(0, port, { bind(listener, $0, $1) }) == 0, listen(listener, 16) == 0 else { die("echo: listen on \(port)") }
    var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        guard poll(&fds, nfds_t(fds.count), -1) > 0 else { continue }
        var closed: [Int] = []
        for i in fds.indices where fds[i].revents != 0 {
            if i == 0 {
                let fd = accept(listener, nil, nil)
                if fd >= 0 { fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
                continue
            }
            let n = recv(fds[i].fd, &buf, buf.count, 0)
            if n <= 0 || send(fds[i].fd, buf, n, Int32(MSG_NOSIGNAL)) != n { closed.append(i) }
        }
        for i in closed.reversed() {
            close(fds[i].fd)
            fds.remove(at: i)
        }
        for i in fds.indices { fds[i].revents = 0 }
    }
}

func hold(_ ip: in_addr_t, _ port: UInt16, intervalMs: Int, seconds: Double) -> Never {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0, withSockaddr(ip, port, { connect(fd, $0, $1) }) == 0 else { die("hold: connect") }
    var timeout = timeval(tv_sec: 0, tv_usec: Int(intervalMs) * 1000)
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) * 1000 + Double(ts.tv_nsec) / 1e6
    }
    let end = now() + seconds * 1000
    var byte: UInt8 = 0x68
    var reply = [UInt8](repeating: 0, count: 64)
    while now() < end {
        let sent = now()
        guard send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 else { die("hold: send") }
        if recv(fd, &reply, reply.count, 0) > 0 {
            let line = Array("\(Int(now()))\n".utf8)
            _ = write(1, line, line.count) // unbuffered: the log is read while this runs
        }
        let left = Double(intervalMs) - (now() - sent)
        if left > 0 { usleep(UInt32(left * 1000)) }
    }
    exit(0)
}
