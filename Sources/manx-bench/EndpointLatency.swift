import ArgumentParser
import Foundation
import Glibc
import ManxBPF
import ManxCommand
import ManxConformance
import ManxDatastore
import ManxMapLayout
import ManxModel
import ManxNodeState

/// Time from a pod appearing in the datastore to its first correctly
/// policed packet, with manxd running as a daemon: the new pod's policy
/// admits the client on port 80 only. With `--change policy`, one pod stays
/// and its policy changes instead, from port 80 to 81 and back.
///
/// The client keeps sending SYNs to the port the new state refuses, and
/// the first packet judged by the new rule set is the first of them that
/// the dataplane denies by a policy rule: its flow event carries the
/// kernel's timestamp (CLOCK_MONOTONIC, the bench's clock). A new pod's
/// interface is attached with a slot that denies everything until the
/// flip; those drops name no rule, and do not count. Once found, the
/// other port must connect. (Timing a connect that fails by its timeout
/// instead, as before, was off by up to the timeout, in either direction.)
/// The clock starts when the write is done: as the file is renamed into
/// the directory, or at etcd's answer to the put (whose own latency is reported
/// beside).
struct EndpointLatency: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "endpoint-latency",
                                                    abstract: "Datastore write to first policed packet, p50/p99.")

    @Option(help: "Endpoints to create.")
    var count: Int = 30

    @Option(help: "Datastore: directory or etcd (one member in the node's namespace).")
    var datastore: String = "directory"

    @Option(help: "Policies loaded beforehand (over 100 other endpoints' labels, as control-plane's).")
    var backgroundPolicies: Int = 0

    @Option(help: "What changes: pod (a new pod each time) or policy (one pod's policy, port 80 <-> 81).")
    var change: String = "pod"

    @Flag(help: "The background policies' 100 pods are endpoints of this node (on veth pairs in its namespace), so the policies apply here.")
    var localBackground = false

    @Option(help: "Microseconds between the client's SYNs (0: back to back, which keeps a CPU busy).")
    var probeInterval: Int = 20

    @Flag(help: "Print every sample (ms, in order) to stderr.")
    var printSamples = false

    @Option(help: "manxd's log level (info logs each pass's stages); with another level than warning the scratch directory, logs included, is kept and named on stderr.")
    var daemonLogLevel: String = "warning"

    func run() throws {
        guard ["directory", "etcd"].contains(datastore) else { throw ValidationError("--datastore must be directory or etcd") }
        guard ["pod", "policy"].contains(change) else { throw ValidationError("--change must be pod or policy") }
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let prefix = "mxel\(getpid() % 1000)"
        let lab = Lab(prefix: prefix)
        let scratch = try makeScratchDirectory(prefix)
        let ds = "\(scratch)/ds"
        let etcd = datastore == "etcd" ? EtcdMember(name: "m1", host: "127.0.0.1", netns: lab.node, dataDirectory: "\(scratch)/etcd") : nil
        defer {
            etcd?.stop()
            lab.teardown()
            if daemonLogLevel == "warning" {
                try? FileManager.default.removeItem(atPath: scratch)
            } else {
                FileHandle.standardError.write(Data("logs kept in \(scratch)\n".utf8))
            }
            try? FileManager.default.removeItem(atPath: "/sys/fs/bpf/manx/\(prefix)")
            try? FileManager.default.removeItem(atPath: "/run/manx/\(prefix)")
        }
        try FileManager.default.createDirectory(atPath: ds, withIntermediateDirectories: true)
        try lab.createNode()
        if let etcd {
            try etcd.start(cluster: [etcd], token: prefix, log: "\(scratch)/etcd.log")
            try etcd.waitReady()
        }
        let (clientNs, clientIf) = try lab.addPod("c", ip: "10.61.0.1")
        func webPolicy(port: Int) -> String {
            """
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicy
            metadata: {name: web, namespace: lat}
            spec:
              podSelector: {matchLabels: {app: web}}
              ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: \(port)}]}]
            """
        }
        var base = """
        apiVersion: v1
        kind: Namespace
        metadata: {name: lat}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: client, namespace: lat, labels: {app: client}, annotations: {manx.io/interface: \(clientIf)}}
        status: {podIP: 10.61.0.1}
        """
        if backgroundPolicies > 0 {
            let background = ControlPlane.resources(policies: backgroundPolicies, endpoints: 100)
            if localBackground {
                // Endpoints of this node: veth pairs cp0..cp99 (peers cq0..cq99) in its namespace.
                let links = (0..<100).map { "link add cp\($0) type veth peer name cq\($0)\nlink set cp\($0) up\nlink set cq\($0) up\n" }.joined()
                try links.write(toFile: "\(ds)/links", atomically: true, encoding: .utf8)
                _ = try Command.checked(["ip", "-n", lab.node, "-batch", "\(ds)/links"])
                try FileManager.default.removeItem(atPath: "\(ds)/links") // not a resource
                base += "\n---\n" + background
            } else {
                // Their pods are peers elsewhere, not endpoints of this node.
                base += "\n---\n" + background
                    .replacingOccurrences(of: ControlPlane.interfaceAnnotation, with: "", options: .regularExpression)
            }
        }
        try base.write(toFile: "\(ds)/base.yaml", atomically: true, encoding: .utf8)
        if etcd != nil {
            // Into etcd, and out of the directory (which is then only scratch).
            _ = try Command.checked(["ip", "netns", "exec", lab.node, bin + "/bpfctl", "apply", "-f", "\(ds)/base.yaml", "--etcd-endpoints", "http://127.0.0.1:2379",
                                     "--in-parts"])
            try FileManager.default.removeItem(atPath: "\(ds)/base.yaml")
        }
        var commits: [Double] = []
        /// Writes one resource; returns when the write was done (etcd: acknowledged).
        func write(_ name: String, _ yaml: String) throws -> Double {
            if etcd != nil {
                let document = try ResourceSet.documents(file: name, text: yaml)[0]
                let (sent, acknowledged) = try NetworkNamespace.run(lab.node) {
                    try Self.etcdPut(ResourceKeys.key(document.header)!, document.json)
                }
                commits.append((acknowledged - sent) * 1000)
                return acknowledged
            }
            // Atomic write: the daemon sees the whole resource at once, from
            // some instant during the rename. The clock starts just before
            // it: read after it returns, it could be late by however long
            // this thread waited for a CPU (one sample read 0.19 ms, where
            // manxd itself took 1.8 ms).
            try yaml.write(toFile: "\(ds)/.\(name).tmp", atomically: false, encoding: .utf8)
            let t0 = Self.now()
            rename("\(ds)/.\(name).tmp", "\(ds)/\(name).yaml")
            return t0
        }
        // The pods' policy in a key (file) of its own, so that it can change alone.
        _ = try write("webpolicy", webPolicy(port: 80))
        commits = []
        let store = etcd == nil ? ["--datastore", ds] : ["--etcd-endpoints", "http://127.0.0.1:2379"]
        _ = try lab.spawn(in: lab.node, [bin + "/manxd"] + store + ["--node", prefix, "--log-level", daemonLogLevel],
                          log: "\(scratch)/manxd.log", needsPins: true)
        // Until the base is in force: the client's endpoint is programmed.
        for _ in 0..<600 {
            if let meta = try? String(contentsOfFile: "/run/manx/\(prefix)/metadata.json", encoding: .utf8), meta.contains("lat/client") { break }
            usleep(50_000)
        }
        usleep(500_000)

        let events = try BPFRingBuffer(try BPFMap.openPinned("\(NodePaths(node: prefix).pinRoot)/\(MANX_MAP_EVENTS)"))
        var samples: [Double] = []
        for k in 0..<(change == "pod" ? count : 1) {
            let ip = "10.61.1.\(k + 1)"
            let (ns, iface) = try lab.addPod("n\(k)", ip: ip)
            let ready = "\(scratch)/n\(k).ready"
            _ = try lab.spawn(in: ns, [bin + "/manx-probe", "serve", "--ports", "80,81", "--ready-file", ready], log: "/dev/null")
            for _ in 0..<200 where !FileManager.default.fileExists(atPath: ready) { usleep(5_000) }
            try? FileManager.default.removeItem(atPath: ready)
            // The node learns the pod's MAC now. Its veth is up before manxd
            // attaches (manx-cni brings it up only after): attaching creates
            // the clsact qdisc, which drops a packet in flight, and if that
            // is the node's first ARP request the neighbour entry waits 1 s
            // for its retransmission (the ~1 s outliers of earlier runs).
            _ = try Command.checked(["ip", "netns", "exec", lab.node, "ping", "-c", "1", "-W", "1", ip])
            let t0 = try write("web\(k)", "apiVersion: v1\nkind: Pod\nmetadata: {name: web\(k), namespace: lat, labels: {app: web}, annotations: {manx.io/interface: \(iface)}}\nstatus: {podIP: \(ip)}\n")
            let elapsed = try Self.firstJudged(from: clientNs, inet_addr(ip), allowed: 80, refused: 81, since: t0, events: events, interval: probeInterval)
            if change == "pod" { samples.append(elapsed * 1000) }
        }
        if change == "policy" {
            commits = []
            // The pod's own pass (with 10k policies, more than its enforcement) ends first.
            usleep(1_000_000)
            for k in 0..<count {
                let (allowed, refused): (UInt16, UInt16) = k % 2 == 0 ? (81, 80) : (80, 81)
                let t0 = try write("webpolicy", webPolicy(port: Int(allowed)))
                samples.append(try Self.firstJudged(from: clientNs, inet_addr("10.61.1.1"), allowed: allowed, refused: refused, since: t0, events: events,
                                                   interval: probeInterval) * 1000)
                usleep(100_000)
            }
        }
        if printSamples { FileHandle.standardError.write(Data(samples.map { String(format: "%.2f\n", $0) }.joined().utf8)) }
        print(Markdown.table(["datastore", "change", "policies loaded", "samples", "p50 ms", "p99 ms", "max ms", "etcd put p50 ms", "etcd put p99 ms"],
                             [[datastore, change, "\(backgroundPolicies)", "\(count)", Self.pct(samples, 0.5), Self.pct(samples, 0.99), Self.pct(samples, 1),
                               Self.pct(commits, 0.5), Self.pct(commits, 0.99)]]))
    }

    /// One etcd put through the JSON gateway on 127.0.0.1:2379 of the
    /// calling thread's namespace, over a plain socket: returns when the
    /// request was sent and when etcd's answer arrived.
    static func etcdPut(_ key: String, _ value: String) throws -> (sent: Double, acknowledged: Double) {
        let body = #"{"key":"\#(Data(key.utf8).base64EncodedString())","value":"\#(Data(value.utf8).base64EncodedString())"}"#
        let request = "POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: UInt16(2379).bigEndian, sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw RunnerError("cannot connect to etcd: errno \(errno)") }
        let sent = now()
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var response = [UInt8]()
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            response += buffer[0..<n]
            if String(decoding: response, as: UTF8.self).contains("\"revision\"") { break }
        }
        let acknowledged = now()
        guard String(decoding: response, as: UTF8.self).hasPrefix("HTTP/1.1 200") else {
            throw RunnerError("etcd put failed: \(String(decoding: response, as: UTF8.self))")
        }
        return (sent, acknowledged)
    }

    /// The first SYN to `refused` denied by a policy rule at or after `t0`
    /// (see the type's comment), in seconds from `t0`; then `allowed` must
    /// connect and `refused` must not.
    static func firstJudged(from netns: String, _ target: in_addr_t, allowed: UInt16, refused: UInt16, since t0: Double,
                            events: BPFRingBuffer, interval: Int) throws -> Double {
        nonisolated(unsafe) let events = events // used by this thread alone until it returns
        return try NetworkNamespace.run(netns) { () throws -> Double in
            var judged: Double?
            while judged == nil {
                guard now() - t0 < 10 else { throw RunnerError("no packet to port \(refused) was denied by a rule within 10 s") }
                sendSYN(target, refused)
                for record in try events.poll(timeoutMs: 0) where record.count >= MemoryLayout<manx_flow_event>.size {
                    let e = record.withUnsafeBytes { $0.loadUnaligned(as: manx_flow_event.self) }
                    let at = Double(e.timestamp_ns) / 1e9
                    guard judged == nil, at >= t0, e.daddr == target, UInt16(bigEndian: e.dport) == refused,
                          e.verdict == UInt8(MANX_VERDICT_DENY.rawValue), e.rule_id >= MANX_RULE_FIRST else { continue }
                    judged = at - t0
                }
                if interval > 0 { usleep(UInt32(interval)) }
            }
            guard connects(target, allowed, timeoutMs: 500), !connects(target, refused, timeoutMs: 50) else {
                throw RunnerError("after the first denial of port \(refused), port \(allowed) does not connect or \(refused) does")
            }
            return judged!
        }
    }

    /// A SYN to the port, without waiting for anything: the socket is
    /// closed at once (an answer gets a reset).
    static func sendSYN(_ ip: in_addr_t, _ port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return }
        var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: port.bigEndian, sin_addr: in_addr(s_addr: ip), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        close(fd)
    }

    /// The p-quantile of `values` (the nearest rank); nil for none.
    static func quantile(_ values: [Double], _ p: Double) -> Double? {
        let sorted = values.sorted()
        return sorted.isEmpty ? nil : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }

    /// The same as table text, "-" for none.
    static func pct(_ values: [Double], _ p: Double) -> String {
        quantile(values, p).map { String(format: "%.1f", $0) } ?? "-"
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// A TCP connect with a deadline, from the calling thread's namespace.
    static func connects(_ ip: in_addr_t, _ port: UInt16, timeoutMs: Int32) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: port.bigEndian, sin_addr: in_addr(s_addr: ip), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc == 0 { return true }
        guard errno == EINPROGRESS else { return false }
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&pfd, 1, timeoutMs) == 1 else { return false }
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
        return err == 0
    }
}
