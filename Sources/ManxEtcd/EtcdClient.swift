import Foundation
import Synchronization

/// A client of etcd's v3 API through its JSON gateway (`/v3/kv/...`,
/// `/v3/watch`), served by every etcd 3.4 member on its client URL.
///
/// Chosen over gRPC with generated protobuf code: the gateway is the same
/// API (keys and values in base64, 64-bit numbers as strings), it needs no
/// generated code and no HTTP/2 stack, and a watch is one streamed POST.
///
/// Requests go to one endpoint; when it cannot be reached the next one is
/// tried, so losing a member of a cluster loses no request. HTTP/1.1 over
/// plain sockets (`HTTPConnection`), each request on a thread of its own;
/// TLS is not supported.
public final class EtcdClient: Sendable {
    public let endpoints: [String]
    private let targets: [HTTPEndpoint]
    private let current = Atomic<Int>(0)
    private let pool = HTTPConnectionPool()
    /// Operations etcd accepts in one transaction by default (--max-txn-ops).
    public static let maxOperations = 128

    /// How long a request (not a watch) may take in all.
    public let timeout: Duration
    /// A member that does not answer a connect within this is treated as
    /// down, and the next one is tried.
    public static let connectTimeout = Duration.seconds(1)

    public init(endpoints: [String], timeout: Duration = .seconds(3)) throws(EtcdError) {
        let cleaned = endpoints.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }.filter { !$0.isEmpty }
        guard !cleaned.isEmpty else { throw EtcdError(message: "no etcd endpoint given") }
        var targets: [HTTPEndpoint] = []
        for e in cleaned {
            if e.hasPrefix("https://") { throw EtcdError(message: "etcd endpoint '\(e)': TLS is not supported (use http://)") }
            guard let target = HTTPEndpoint(e) else {
                throw EtcdError(message: "etcd endpoint '\(e)' is not a URL like http://127.0.0.1:2379")
            }
            targets.append(target)
        }
        self.endpoints = cleaned
        self.targets = targets
        self.timeout = timeout
    }

    public struct KeyValue: Sendable, Equatable {
        public var key: String
        public var value: String
        public var modRevision: Int64
        public var createRevision: Int64
    }

    // MARK: Key-value

    /// Every key under a prefix, read in pages at one revision, so the
    /// result is one consistent snapshot however large.
    public func list(prefix: String, pageSize: Int = 2000) async throws -> (kvs: [KeyValue], revision: Int64) {
        var kvs: [KeyValue] = []
        var start = prefix
        var revision: Int64 = 0
        while true {
            var body: [String: Any] = ["key": b64(start), "range_end": b64(Self.prefixEnd(prefix)), "limit": "\(pageSize)"]
            if revision > 0 { body["revision"] = "\(revision)" }
            let r = try await call("/v3/kv/range", body)
            if revision == 0 { revision = Self.int(Self.object(r["header"])["revision"]) }
            let page = try (r["kvs"] as? [Any] ?? []).map(Self.keyValue)
            kvs += page
            guard r["more"] as? Bool == true, let last = page.last else { return (kvs, revision) }
            start = last.key + "\u{0}"
        }
    }

    public func get(_ key: String) async throws -> KeyValue? {
        let r = try await call("/v3/kv/range", ["key": b64(key)])
        return try (r["kvs"] as? [Any])?.first.map(Self.keyValue)
    }

    /// Returns the revision of the write.
    @discardableResult
    public func put(_ key: String, _ value: String) async throws -> Int64 {
        Self.int(Self.object(try await call("/v3/kv/put", ["key": b64(key), "value": b64(value)])["header"])["revision"])
    }

    /// Returns how many keys were deleted.
    @discardableResult
    public func delete(_ key: String, prefix: Bool = false) async throws -> Int {
        var body = ["key": b64(key)]
        if prefix { body["range_end"] = b64(Self.prefixEnd(key)) }
        return Int(Self.int(try await call("/v3/kv/deleterange", body)["deleted"]))
    }

    /// What a transaction compares: a key's mod revision (0: the key does
    /// not exist).
    public struct Compare: Sendable {
        public var key: String
        public var modRevision: Int64
        public init(key: String, modRevision: Int64) {
            self.key = key
            self.modRevision = modRevision
        }
    }

    public enum Operation: Sendable {
        case put(String, String)
        case delete(String)
    }

    /// Applies `operations` only if every comparison holds (compare-and-swap
    /// on mod revisions). Returns whether it did, and the revision.
    public func transaction(if compares: [Compare], then operations: [Operation]) async throws -> (succeeded: Bool, revision: Int64) {
        try await transaction(compares: compares.map { ["target": "MOD", "key": b64($0.key), "mod_revision": "\($0.modRevision)", "result": "EQUAL"] },
                              then: operations)
    }

    private func transaction(compares: [[String: String]], then operations: [Operation]) async throws -> (succeeded: Bool, revision: Int64) {
        let body: [String: Any] = [
            "compare": compares,
            "success": operations.map { op -> [String: Any] in
                switch op {
                case .put(let k, let v): return ["request_put": ["key": b64(k), "value": b64(v)]]
                case .delete(let k): return ["request_delete_range": ["key": b64(k)]]
                }
            },
        ]
        let r = try await call("/v3/kv/txn", body)
        return (r["succeeded"] as? Bool ?? false, Self.int(Self.object(r["header"])["revision"]))
    }

    /// Applies `operations` only if no key under `prefix` was written after
    /// `revision` (one compare over the whole range: a key created or
    /// changed since has a later mod revision). A key deleted since is not
    /// seen by it.
    public func transaction(ifUnchangedSince revision: Int64, under prefix: String,
                            then operations: [Operation]) async throws -> (succeeded: Bool, revision: Int64) {
        try await transaction(compares: [[
            "target": "MOD", "key": b64(prefix), "range_end": b64(Self.prefixEnd(prefix)),
            "mod_revision": "\(revision + 1)", "result": "LESS",
        ]], then: operations)
    }

    /// Discards the history before `revision`.
    public func compact(_ revision: Int64) async throws {
        _ = try await call("/v3/kv/compaction", ["revision": "\(revision)", "physical": true])
    }

    // MARK: Watch

    public struct Event: Sendable, Equatable {
        public var key: String
        /// nil: deleted.
        public var value: String?
        public var modRevision: Int64
    }

    /// The events under a prefix from `revision` on, in batches, each with
    /// the revision the member had reached; first an empty batch once the
    /// watch is established. Throws `EtcdError.compacted`
    /// when the revision is no longer available. The stream ends only with
    /// an error or when the consumer stops.
    public func watch(prefix: String, from revision: Int64) -> AsyncThrowingStream<(events: [Event], revision: Int64), Error> {
        AsyncThrowingStream { continuation in
            let reader = WatchReader()
            let index = current.load(ordering: .relaxed) % targets.count
            let target = targets[index], timeout = timeout
            let body = Self.json(["create_request": [
                "key": b64(prefix), "range_end": b64(Self.prefixEnd(prefix)), "start_revision": "\(revision)",
            ]])
            continuation.onTermination = { _ in reader.stop() }
            Thread.detachNewThread { [self] in
                do {
                    let connection = try HTTPConnection.open(target, timeout: Self.connectTimeout, deadline: .now + timeout)
                    guard reader.start(connection) else { return continuation.finish() }
                    try connection.post("/v3/watch", body, deadline: .now + timeout)
                    let (status, framing) = try connection.head(deadline: .now + timeout)
                    guard status == 200 else {
                        var answer: [UInt8] = []
                        try connection.body(framing, deadline: .now + timeout, limit: 1 << 20) { answer += $0 }
                        throw Self.error(answer, target.description)
                    }
                    var pending: [UInt8] = []
                    try connection.body(framing, deadline: nil, limit: .max) { piece in
                        pending += piece
                        while let line = Self.takeLine(&pending) {
                            if let batch = try Self.watchMessage(line, from: revision, target.description) { continuation.yield(batch) }
                        }
                    }
                    throw EtcdError(message: "watch stream from \(target) ended")
                } catch {
                    if reader.stopped { continuation.finish() } else {
                        rotate()
                        continuation.finish(throwing: error)
                    }
                }
                reader.end()
            }
        }
    }

    /// One message of a watch stream: a batch to deliver, or nil.
    private static func watchMessage(_ line: [UInt8], from revision: Int64, _ endpoint: String) throws -> (events: [Event], revision: Int64)? {
        guard let message = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
            throw EtcdError(message: "unreadable watch response from \(endpoint)")
        }
        if message["error"] != nil { throw error(line, endpoint) }
        let result = object(message["result"])
        let compacted = int(result["compact_revision"])
        if compacted > 0 { throw EtcdError.compacted(compacted) }
        if result["canceled"] as? Bool == true {
            throw EtcdError(message: "watch canceled by \(endpoint): \(result["cancel_reason"] ?? "no reason")")
        }
        let events = try (result["events"] as? [Any] ?? []).map { raw -> Event in
            let e = object(raw)
            let kv = try keyValue(e["kv"] as Any)
            return Event(key: kv.key, value: e["type"] as? String == "DELETE" ? nil : kv.value, modRevision: kv.modRevision)
        }
        if result["created"] as? Bool == true {
            // Established: an empty batch at the revision before `from`
            // (the header's is ahead of events still to come).
            return ([], revision - 1)
        }
        return events.isEmpty ? nil : (events, int(object(result["header"])["revision"]))
    }

    // MARK: Transport

    /// One request, to the current endpoint or, if it cannot be reached,
    /// to each of the others in turn.
    private func call(_ path: String, _ body: [String: Any]) async throws -> [String: Any] {
        let request = Self.json(body)
        var lastError: Error = EtcdError(message: "no endpoint")
        for _ in targets.indices {
            let target = targets[current.load(ordering: .relaxed) % targets.count]
            let status: Int, answer: [UInt8]
            do {
                let (pool, timeout) = (pool, timeout)
                (status, answer) = try await onThread {
                    try pool.post(target, path, request, connectTimeout: Self.connectTimeout, deadline: .now + timeout)
                }
            } catch {
                // Unreachable or too slow: the next member.
                lastError = EtcdError(message: "\(target): \(error)", unreachable: true)
                rotate()
                continue
            }
            if status == 200, let object = try? JSONSerialization.jsonObject(with: Data(answer)) as? [String: Any] {
                return object
            }
            let error = Self.error(answer, target.description)
            // A member without a leader, or stopping: another may answer.
            if error.code == 14 || error.code == 4 {
                lastError = error
                rotate()
                continue
            }
            throw error
        }
        throw lastError
    }

    private func rotate() { current.add(1, ordering: .relaxed) }

    private static func json(_ body: [String: Any]) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: body)) ?? Data())
    }

    private static func error(_ answer: [UInt8], _ endpoint: String) -> EtcdError {
        let object = (try? JSONSerialization.jsonObject(with: Data(answer))) as? [String: Any]
        let message = object?["message"] as? String ?? object?["error"] as? String ?? String(decoding: answer, as: UTF8.self)
        let code = object?["code"].map { Int(int($0)) }
        if message.contains("required revision has been compacted") { return .compacted(0) }
        return EtcdError(message: "\(endpoint): \(message)", code: code)
    }

    /// The next non-empty line of a newline-delimited stream, taken out of `buffer`.
    private static func takeLine(_ buffer: inout [UInt8]) -> [UInt8]? {
        while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
            let line = Array(buffer[..<newline])
            buffer.removeFirst(newline + 1)
            if !line.isEmpty { return line }
        }
        return nil
    }

    // MARK: Encoding

    private func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

    /// The end of a prefix's range: the prefix with its last byte incremented.
    static func prefixEnd(_ prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xff {
                bytes[bytes.count - 1] = last + 1
                return String(decoding: bytes, as: UTF8.self)
            }
            bytes.removeLast()
        }
        return "\u{0}"
    }

    private static func object(_ any: Any?) -> [String: Any] { any as? [String: Any] ?? [:] }

    /// etcd's gateway writes 64-bit numbers as strings, and leaves out zeros.
    private static func int(_ any: Any?) -> Int64 {
        if let s = any as? String { return Int64(s) ?? 0 }
        if let n = any as? NSNumber { return n.int64Value }
        return 0
    }

    private static func keyValue(_ any: Any) throws -> KeyValue {
        let kv = object(any)
        guard let key = (kv["key"] as? String).flatMap({ Data(base64Encoded: $0) }).map({ String(decoding: $0, as: UTF8.self) }) else {
            throw EtcdError(message: "a key-value without a key")
        }
        let value = (kv["value"] as? String).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } ?? ""
        return KeyValue(key: key, value: value, modRevision: int(kv["mod_revision"]), createRevision: int(kv["create_revision"]))
    }
}

/// A watch's reading thread and the consumer that may stop it: stopping
/// shuts the connection down, which wakes the thread.
private final class WatchReader: Sendable {
    private let state = Mutex<(connection: HTTPConnection?, stopped: Bool)>((nil, false))

    var stopped: Bool { state.withLock { $0.stopped } }

    /// Whether to go on (false: stopped before the connection was made).
    func start(_ connection: HTTPConnection) -> Bool {
        state.withLock {
            if $0.stopped { return false }
            $0.connection = connection
            return true
        }
    }

    func stop() {
        state.withLock {
            $0.stopped = true
            $0.connection?.shutDown()
        }
    }

    func end() { state.withLock { $0.connection = nil } }
}

public struct EtcdError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var code: Int?
    /// No member could be reached.
    public var unreachable = false
    /// The revision asked for was compacted away (the compaction's revision, if known).
    public var compactedAt: Int64?

    public init(message: String, code: Int? = nil, unreachable: Bool = false) {
        self.message = message
        self.code = code
        self.unreachable = unreachable
    }

    public static func compacted(_ revision: Int64) -> EtcdError {
        var e = EtcdError(message: "the revision was compacted" + (revision > 0 ? " (compacted at \(revision))" : ""), code: 11)
        e.compactedAt = revision
        return e
    }

    public var description: String { "etcd: \(message)" }
}
