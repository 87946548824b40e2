import Foundation

/// One etcd member (Debian's etcd-server), run for tests, the simulated
/// cluster and the demo: in a network namespace, or on this namespace's
/// loopback when `netns` is nil.
public final class EtcdMember: @unchecked Sendable {
    public let name: String
    public let host: String
    public let netns: String?
    public let clientPort: Int
    public let peerPort: Int
    public let dataDirectory: String
    private var process: Process?

    public var clientURL: String { "http://\(host):\(clientPort)" }
    public var peerURL: String { "http://\(host):\(peerPort)" }

    public init(name: String, host: String, netns: String?, clientPort: Int = 2379, peerPort: Int = 2380, dataDirectory: String) {
        self.name = name
        self.host = host
        self.netns = netns
        self.clientPort = clientPort
        self.peerPort = peerPort
        self.dataDirectory = dataDirectory
    }

    /// Whether etcd is installed (`tools/install-deps` installs it).
    public static var installed: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") }

    /// Starts the member as part of `cluster` (all members, this one
    /// included). A member restarted with its data directory rejoins.
    public func start(cluster: [EtcdMember], token: String, log: String) throws {
        let initial = cluster.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
        let args = ["etcd", "--name", name, "--data-dir", dataDirectory,
                    "--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
                    "--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
                    "--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", token,
                    // Small, quick: tests and the demo hold little.
                    "--heartbeat-interval", "50", "--election-timeout", "500", "--snapshot-count", "10000",
                    "--quota-backend-bytes", "\(1 << 30)"]
        process = try Shell.start((netns.map { ["ip", "netns", "exec", $0] } ?? []) + args, log: log)
    }

    /// Stops the member: SIGTERM, then SIGKILL if it is still shutting down
    /// after 5 s (a leader whose peers are gone can wait on them).
    public func stop() {
        guard let p = process else { return }
        if p.isRunning { p.terminate() }
        for _ in 0..<50 where p.isRunning { usleep(100_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        process = nil
    }

    public var isRunning: Bool { process?.isRunning ?? false }

    /// Runs etcdctl against this member, from its namespace.
    @discardableResult
    public func etcdctl(_ args: [String], input: String? = nil) throws -> String {
        try Shell.run((netns.map { ["ip", "netns", "exec", $0] } ?? []) + ["etcdctl", "--endpoints", clientURL] + args,
                      environment: ["ETCDCTL_API": "3"], input: input)
    }

    /// Waits until the member answers a read that needs a quorum.
    public func waitReady(timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last = ""
        while Date() < deadline {
            do {
                try etcdctl(["get", "--prefix", "/manx-ready-probe"])
                return
            } catch {
                last = "\(error)"
            }
            if let p = process, !p.isRunning { break }
            usleep(100_000)
        }
        throw EtcdNotReady(member: name, reason: last)
    }

    /// The cluster's current revision, as this member sees it.
    public func revision() throws -> Int64 {
        let out = try etcdctl(["get", "/", "-w", "json"])
        guard let object = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any],
              let header = object["header"] as? [String: Any], let revision = header["revision"] as? NSNumber else {
            throw EtcdNotReady(member: name, reason: "unreadable revision: \(out)")
        }
        return revision.int64Value
    }

    public struct EtcdNotReady: Error, CustomStringConvertible {
        public var member: String
        public var reason: String
        public var description: String { "etcd member \(member) is not ready: \(reason)" }
    }
}
