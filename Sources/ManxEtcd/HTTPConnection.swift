import Foundation
import Glibc
import Synchronization

/// Where an etcd member's client URL points: `http://host:port`.
struct HTTPEndpoint: Sendable, Hashable, CustomStringConvertible {
    let host: String
    let port: UInt16
    let description: String

    /// nil: not an `http://host[:port]` URL (TLS is not supported).
    init?(_ url: String) {
        guard let u = URL(string: url), u.scheme == "http", let host = u.host, !host.isEmpty,
              u.path.isEmpty || u.path == "/", u.query == nil else { return nil }
        self.host = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        self.port = UInt16(u.port ?? 80)
        self.description = url
    }
}

struct HTTPError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One HTTP/1.1 connection over a blocking socket, used by one thread at a
/// time: a POST with a JSON body, and its answer, whole (with a length or
/// chunked) or as a stream of chunks (etcd's watch).
///
/// etcd's JSON gateway is plain HTTP/1.1. A client of our own on a socket
/// keeps NIO's event loops, and the runtime's conformance lookups over a
/// binary that links them, out of the CNI plugin: they were most of the
/// 10 ms of its first etcd request.
final class HTTPConnection: @unchecked Sendable {
    private let fd: Int32
    let endpoint: HTTPEndpoint
    /// Bytes read past what was consumed.
    private var pending: [UInt8] = []
    private(set) var reusable = true
    /// Whether anything came back since the last request was sent.
    private(set) var answered = false

    private init(fd: Int32, endpoint: HTTPEndpoint) {
        self.fd = fd
        self.endpoint = endpoint
    }

    deinit { close(fd) }

    /// Connects within `timeout` (and before `deadline`).
    static func open(_ endpoint: HTTPEndpoint, timeout: Duration, deadline: ContinuousClock.Instant) throws(HTTPError) -> HTTPConnection {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(endpoint.host, String(endpoint.port), &hints, &list)
        guard rc == 0, let list else { throw HTTPError("cannot resolve \(endpoint.host): \(String(cString: gai_strerror(rc)))") }
        defer { freeaddrinfo(list) }
        let connectBy = min(deadline, .now + timeout)
        var lastError = "no address"
        var ai: UnsafeMutablePointer<addrinfo>? = list
        while let a = ai {
            ai = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), a.pointee.ai_protocol)
            guard fd >= 0 else { lastError = String(cString: strerror(errno)); continue }
            let connection = HTTPConnection(fd: fd, endpoint: endpoint)
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            // Non-blocking for the connect only, so it can time out.
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            if connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) != 0 {
                guard errno == EINPROGRESS else { lastError = String(cString: strerror(errno)); continue }
                guard connection.wait(POLLOUT, until: connectBy) else { lastError = "connect timed out"; continue }
                var err: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
                guard err == 0 else { lastError = String(cString: strerror(err)); continue }
            }
            _ = fcntl(fd, F_SETFL, flags)
            return connection
        }
        throw HTTPError("cannot connect to \(endpoint): \(lastError)")
    }

    /// Wakes a thread blocked on this connection (the watch's reader,
    /// when its consumer stops).
    func shutDown() { shutdown(fd, Int32(SHUT_RDWR)) }

    /// Whether the socket is ready for `events` before `deadline` (nil: no limit).
    private func wait(_ events: Int32, until deadline: ContinuousClock.Instant?) -> Bool {
        while true {
            var ms: Int32 = -1
            if let deadline {
                let left = ContinuousClock.now.duration(to: deadline)
                guard left > .zero else { return false }
                ms = Int32(min(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1, 60_000))
            }
            var p = pollfd(fd: fd, events: Int16(events), revents: 0)
            let n = poll(&p, 1, ms)
            if n > 0 { return true }
            if n < 0 && errno != EINTR { return true } // the next call reports the error
        }
    }

    /// Sends a POST of `body` to `path`.
    func post(_ path: String, _ body: [UInt8], deadline: ContinuousClock.Instant) throws(HTTPError) {
        var request = Array("POST \(path) HTTP/1.1\r\nHost: \(endpoint.host):\(endpoint.port)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8)
        request += body
        answered = false
        var sent = 0
        while sent < request.count {
            guard wait(POLLOUT, until: deadline) else { throw HTTPError("\(endpoint): request timed out") }
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw HTTPError("\(endpoint): send: \(String(cString: strerror(errno)))") }
            sent += n
        }
    }

    /// More bytes into `pending`; false at the end of the stream.
    private func fill(until deadline: ContinuousClock.Instant?) throws(HTTPError) -> Bool {
        guard wait(POLLIN, until: deadline) else { throw HTTPError("\(endpoint): no answer in time") }
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
        if n < 0 {
            if errno == EINTR { return true }
            throw HTTPError("\(endpoint): recv: \(String(cString: strerror(errno)))")
        }
        pending += chunk[0..<n]
        if n > 0 { answered = true }
        return n > 0
    }

    /// The bytes up to the next CRLF (consumed with it).
    private func line(until deadline: ContinuousClock.Instant?) throws(HTTPError) -> [UInt8] {
        var from = 0
        while true {
            if let i = pending[from...].firstIndex(of: 0x0a), i > 0, pending[i - 1] == 0x0d {
                let text = Array(pending[..<(i - 1)])
                pending.removeFirst(i + 1)
                return text
            }
            from = max(0, pending.count - 1)
            guard pending.count < 64 << 10 else { throw HTTPError("\(endpoint): header line too long") }
            guard try fill(until: deadline) else { throw HTTPError("\(endpoint): connection closed") }
        }
    }

    private func take(_ count: Int, until deadline: ContinuousClock.Instant?) throws(HTTPError) -> [UInt8] {
        while pending.count < count {
            guard try fill(until: deadline) else { throw HTTPError("\(endpoint): connection closed mid-answer") }
        }
        let bytes = Array(pending[..<count])
        pending.removeFirst(count)
        return bytes
    }

    enum Framing { case length(Int), chunked, untilClose }

    /// The status line and headers of the answer.
    func head(deadline: ContinuousClock.Instant?) throws(HTTPError) -> (status: Int, framing: Framing) {
        let status = try line(until: deadline)
        let words = String(decoding: status, as: UTF8.self).split(separator: " ")
        guard words.count >= 2, words[0].hasPrefix("HTTP/1."), let code = Int(words[1]) else {
            throw HTTPError("\(endpoint): not an HTTP answer")
        }
        var framing = Framing.untilClose
        while true {
            let header = String(decoding: try line(until: deadline), as: UTF8.self)
            if header.isEmpty { break }
            guard let colon = header.firstIndex(of: ":") else { continue }
            let name = header[..<colon].lowercased(), value = header[header.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch name {
            case "content-length": if case .untilClose = framing, let n = Int(value) { framing = .length(n) }
            case "transfer-encoding": if value.lowercased().contains("chunked") { framing = .chunked }
            case "connection": if value.lowercased() == "close" { reusable = false }
            default: break
            }
        }
        if case .untilClose = framing { reusable = false }
        return (code, framing)
    }

    /// The answer's body in pieces as they arrive, until it ends.
    func body(_ framing: Framing, deadline: ContinuousClock.Instant?, limit: Int = 256 << 20,
              _ piece: ([UInt8]) throws -> Void) throws {
        var total = 0
        func deliver(_ bytes: [UInt8]) throws {
            total += bytes.count
            guard total <= limit else { throw HTTPError("\(endpoint): answer larger than \(limit) bytes") }
            try piece(bytes)
        }
        switch framing {
        case .length(let n):
            try deliver(try take(n, until: deadline))
        case .chunked:
            while true {
                let sizeLine = String(decoding: try line(until: deadline), as: UTF8.self)
                guard let size = Int(sizeLine.split(separator: ";").first ?? "", radix: 16) else {
                    throw HTTPError("\(endpoint): bad chunk size")
                }
                if size == 0 {
                    while try !line(until: deadline).isEmpty {} // trailers
                    return
                }
                let chunk = try take(size, until: deadline)
                guard try take(2, until: deadline) == [0x0d, 0x0a] else { throw HTTPError("\(endpoint): bad chunk end") }
                try deliver(chunk)
            }
        case .untilClose:
            if !pending.isEmpty { try deliver(pending) }
            pending = []
            while try fill(until: deadline) {
                try deliver(pending)
                pending = []
            }
        }
    }

    /// Whether bytes arrived that no answer claimed yet.
    var hasPending: Bool { !pending.isEmpty }
}

/// Idle connections, per endpoint, for requests that follow one another
/// (an IPAM assignment is a few of them).
final class HTTPConnectionPool: Sendable {
    private let idle = Mutex<[HTTPEndpoint: [HTTPConnection]]>([:])

    /// A whole answer to one POST. A reused connection that fails before
    /// any answer (the server closed it while idle) is replaced by a new
    /// one once.
    func post(_ endpoint: HTTPEndpoint, _ path: String, _ body: [UInt8], connectTimeout: Duration,
              deadline: ContinuousClock.Instant) throws -> (status: Int, body: [UInt8]) {
        if let reused = idle.withLock({ $0[endpoint]?.popLast() }) {
            do {
                try reused.post(path, body, deadline: deadline)
                return try finish(reused, deadline: deadline)
            } catch where !reused.answered && ContinuousClock.now < deadline {
                // Closed while idle: the request never reached etcd.
            }
        }
        let connection = try HTTPConnection.open(endpoint, timeout: connectTimeout, deadline: deadline)
        try connection.post(path, body, deadline: deadline)
        return try finish(connection, deadline: deadline)
    }

    private func finish(_ connection: HTTPConnection, deadline: ContinuousClock.Instant) throws -> (status: Int, body: [UInt8]) {
        let (status, framing) = try connection.head(deadline: deadline)
        var body: [UInt8] = []
        try connection.body(framing, deadline: deadline) { body += $0 }
        if connection.reusable && !connection.hasPending {
            idle.withLock { $0[connection.endpoint, default: []].append(connection) }
        }
        return (status, body)
    }
}

/// Runs blocking work on a thread of its own and awaits it, so that no
/// thread of the cooperative pool waits on a socket.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
        Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
    }
}
