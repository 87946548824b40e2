import ArgumentParser
import Foundation
import Glibc
import ManxBPF
import ManxConformance

/// Time from a pod appearing in the datastore to its first correctly
/// policed packet, with manxd running as a daemon: the new pod's policy
/// admits the client on port 80 only, so the moment port 81 stops
/// connecting (while 80 still does) is when enforcement began.
struct EndpointLatency: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "endpoint-latency",
                                                    abstract: "Datastore write to first policed packet, p50/p99.")

    @Option(help: "Endpoints to create.")
    var count: Int = 30

    func run() throws {
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        let prefix = "mxel\(getpid() % 1000)"
        let lab = Lab(prefix: prefix)
        let ds = "/tmp/\(prefix)-ds"
        defer {
            lab.teardown()
            try? FileManager.default.removeItem(atPath: ds)
            try? FileManager.default.removeItem(atPath: "/sys/fs/bpf/manx/\(prefix)")
            try? FileManager.default.removeItem(atPath: "/run/manx/\(prefix)")
        }
        try FileManager.default.createDirectory(atPath: ds, withIntermediateDirectories: true)
        try lab.createNode()
        let (clientNs, clientIf) = try lab.addPod("c", ip: "10.61.0.1")
        try """
        apiVersion: v1
        kind: Namespace
        metadata: {name: lat}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: client, namespace: lat, labels: {app: client}, annotations: {manx.io/interface: \(clientIf)}}
        status: {podIP: 10.61.0.1}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web, namespace: lat}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
        """.write(toFile: "\(ds)/base.yaml", atomically: true, encoding: .utf8)
        _ = try lab.spawn(in: lab.node, [bin + "/manxd", "--datastore", ds, "--node", prefix, "--log-level", "warning"],
                          log: "/tmp/\(prefix)-manxd.log", needsPins: true)
        usleep(1_000_000)

        var samples: [Double] = []
        for k in 0..<count {
            let ip = "10.61.1.\(k + 1)"
            let (ns, iface) = try lab.addPod("n\(k)", ip: ip)
            let ready = "/tmp/\(prefix)-n\(k).ready"
            _ = try lab.spawn(in: ns, [bin + "/manx-probe", "serve", "--ports", "80,81", "--ready-file", ready], log: "/dev/null")
            for _ in 0..<200 where !FileManager.default.fileExists(atPath: ready) { usleep(5_000) }
            try? FileManager.default.removeItem(atPath: ready)
            let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: web\(k), namespace: lat, labels: {app: web}, annotations: {manx.io/interface: \(iface)}}\nstatus: {podIP: \(ip)}\n"
            let target = inet_addr(ip)
            let t0 = Self.now()
            // Atomic write: the daemon sees the whole pod at once.
            try yaml.write(toFile: "\(ds)/.web\(k).tmp", atomically: false, encoding: .utf8)
            rename("\(ds)/.web\(k).tmp", "\(ds)/web\(k).yaml")
            let elapsed = try NetworkNamespace.run(clientNs) { () -> Double in
                while Self.now() - t0 < 10 {
                    let attempt = Self.now()
                    if !Self.connects(target, 81, timeoutMs: 3) && Self.connects(target, 80, timeoutMs: 200) {
                        return attempt - t0
                    }
                }
                return .infinity
            }
            samples.append(elapsed * 1000)
        }
        samples.sort()
        func pct(_ p: Double) -> Double { samples[min(samples.count - 1, Int(Double(samples.count) * p))] }
        print(Markdown.table(["endpoints", "p50 ms", "p99 ms", "max ms"],
                             [["\(count)", String(format: "%.1f", pct(0.5)), String(format: "%.1f", pct(0.99)), String(format: "%.1f", samples.last!)]]))
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
