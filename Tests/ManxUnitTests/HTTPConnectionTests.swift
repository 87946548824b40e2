import Foundation
import Glibc
@testable import ManxEtcd
import Synchronization
import XCTest

/// The etcd client's HTTP/1.1 transport against a scripted server on
/// loopback: how answers are framed, connection reuse, a connection the
/// server closed while idle, and a server that never answers.
final class HTTPConnectionTests: XCTestCase {
    /// Accepts connections on 127.0.0.1 and answers each request with the
    /// next scripted answer; an answer of nil closes the connection
    /// without a word, and "" leaves the request unanswered.
    final class Server: @unchecked Sendable {
        let fd: Int32
        let port: UInt16
        let answers: Mutex<[String?]>
        let connections = Atomic<Int>(0)

        init(_ answers: [String?], closeAfterEach: Bool = false) throws {
            self.answers = Mutex(answers)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            self.fd = fd
            var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
            }
            guard ok, listen(fd, 8) == 0 else { throw HTTPError("cannot listen") }
            port = UInt16(bigEndian: addr.sin_port)
            Thread.detachNewThread { [self] in
                while true {
                    let c = accept(fd, nil, nil)
                    guard c >= 0 else { return }
                    connections.add(1, ordering: .relaxed)
                    Thread.detachNewThread { [self] in serve(c, closeAfterEach: closeAfterEach) }
                }
            }
        }

        func serve(_ c: Int32, closeAfterEach: Bool) {
            defer { close(c) }
            var buffer = [UInt8]()
            while true {
                // One request: headers, then Content-Length bytes.
                while !(String(decoding: buffer, as: UTF8.self).contains("\r\n\r\n")) {
                    var chunk = [UInt8](repeating: 0, count: 4096)
                    let n = recv(c, &chunk, chunk.count, 0)
                    guard n > 0 else { return }
                    buffer += chunk[0..<n]
                }
                let text = String(decoding: buffer, as: UTF8.self)
                let head = text.components(separatedBy: "\r\n\r\n")[0]
                let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                let total = head.utf8.count + 4 + length
                while buffer.count < total {
                    var chunk = [UInt8](repeating: 0, count: 4096)
                    let n = recv(c, &chunk, chunk.count, 0)
                    guard n > 0 else { return }
                    buffer += chunk[0..<n]
                }
                buffer.removeFirst(total)
                let answer = answers.withLock { $0.isEmpty ? nil : $0.removeFirst() }
                guard let answer else { return }
                if answer.isEmpty {
                    sleep(5)
                    return
                }
                _ = answer.withCString { send(c, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                if closeAfterEach || answer.contains("Connection: close") { return }
            }
        }

        var endpoint: HTTPEndpoint { HTTPEndpoint("http://127.0.0.1:\(port)")! }
        deinit {
            shutdown(fd, Int32(SHUT_RDWR)) // ends the accept loop
            close(fd)
        }
    }

    func post(_ pool: HTTPConnectionPool, _ server: Server, timeout: Duration = .seconds(2)) throws -> (Int, String) {
        let (status, body) = try pool.post(server.endpoint, "/v3/kv/range", Array(#"{"key":"a"}"#.utf8), connectTimeout: .seconds(1),
                                           deadline: .now + timeout)
        return (status, String(decoding: body, as: UTF8.self))
    }

    func testFramingAndReuse() throws {
        let server = try Server([
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\n{\"b\r\n4\r\n\":2}\r\n0\r\nTrailer: x\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno",
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        ])
        let pool = HTTPConnectionPool()
        XCTAssertEqual(try post(pool, server).1, #"{"a":1}"#)
        let chunked = try post(pool, server)
        XCTAssertEqual(chunked.0, 200)
        XCTAssertEqual(chunked.1, #"{"b":2}"#)
        XCTAssertEqual(try post(pool, server).0, 404)
        XCTAssertEqual(try post(pool, server).1, "until the end")
        XCTAssertEqual(server.connections.load(ordering: .relaxed), 1, "one kept-alive connection for all four")
    }

    /// A connection the server closed while idle: the request goes again on a new one.
    func testAConnectionClosedWhileIdleIsReplaced() throws {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        let server = try Server([ok, ok], closeAfterEach: true)
        let pool = HTTPConnectionPool()
        XCTAssertEqual(try post(pool, server).1, "ok")
        usleep(50_000) // the server has closed it
        XCTAssertEqual(try post(pool, server).1, "ok")
        XCTAssertEqual(server.connections.load(ordering: .relaxed), 2)
    }

    func testAServerThatNeverAnswersTimesOut() throws {
        let server = try Server([""])
        let start = ContinuousClock.now
        XCTAssertThrowsError(try post(HTTPConnectionPool(), server, timeout: .milliseconds(300))) { error in
            XCTAssertTrue("\(error)".contains("no answer in time"), "\(error)")
        }
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(2))
    }

    func testEndpointsAreHTTPURLs() {
        XCTAssertEqual(HTTPEndpoint("http://10.0.0.1:2379")?.port, 2379)
        XCTAssertEqual(HTTPEndpoint("http://[::1]:2379")?.host, "::1")
        XCTAssertNil(HTTPEndpoint("https://10.0.0.1:2379"))
        XCTAssertNil(HTTPEndpoint("10.0.0.1:2379"))
        XCTAssertNil(HTTPEndpoint("http://10.0.0.1:2379/v3?x=1"))
    }
}
