import Foundation

/// Simulated hosts built from network namespaces: one node namespace, and a
/// namespace per pod joined to it by a veth pair, routed Calico style (a
/// /32 on the pod, a link-local gateway answered by the node, a /32 route
/// per pod on the node). Every name starts with the lab's prefix, and
/// `teardown` removes all of them.
public final class Lab: @unchecked Sendable {
    public let prefix: String
    public var node: String { "\(prefix)-node" }
    private(set) var namespaces: [String] = []
    private var processes: [Process] = []
    public static let gateway = "169.254.1.1"

    public init(prefix: String) { self.prefix = prefix }

    /// Creates a network namespace the lab owns (removed by `teardown`), lo up.
    public func createNamespace(_ name: String) throws {
        try Shell.run(["ip", "netns", "add", name])
        namespaces.append(name)
        try Shell.run(["ip", "-n", name, "link", "set", "lo", "up"])
    }

    public func createNode() throws {
        try createNamespace(node)
        try Shell.run(["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        // The pods' gateway is a node-local address, so ARP for it is answered.
        try Shell.run(["ip", "-n", node, "addr", "add", "\(Self.gateway)/32", "dev", "lo"])
    }

    /// Creates the pod namespace and its veth; returns the host-side name.
    public func addPod(_ name: String, ip: String) throws -> (netns: String, interface: String) {
        let netns = "\(prefix)-\(name)"
        let host = "\(prefix)\(name)"
        precondition(host.count <= 15, "interface name \(host) is too long")
        try Shell.run(["ip", "netns", "add", netns])
        namespaces.append(netns)
        try Shell.run(["ip", "link", "add", host, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", netns])
        for cmd in [
            ["ip", "-n", netns, "link", "set", "lo", "up"],
            ["ip", "-n", netns, "link", "set", "eth0", "up"],
            ["ip", "-n", netns, "addr", "add", "\(ip)/32", "dev", "eth0"],
            ["ip", "-n", netns, "route", "add", Self.gateway, "dev", "eth0", "scope", "link"],
            ["ip", "-n", netns, "route", "add", "default", "via", Self.gateway, "dev", "eth0"],
            ["ip", "-n", node, "link", "set", host, "up"],
            ["ip", "-n", node, "route", "add", "\(ip)/32", "dev", host],
        ] { try Shell.run(cmd) }
        return (netns, host)
    }

    /// Runs a long-lived process in a namespace. `ip netns exec` remounts
    /// /sys (hiding bpffs pins), so processes that need pins use
    /// `nsenter --net`, which only switches the network namespace.
    public func spawn(in netns: String, _ args: [String], log: String, needsPins: Bool = false) throws -> Process {
        let wrapper = needsPins ? ["nsenter", "--net=/run/netns/\(netns)"] : ["ip", "netns", "exec", netns]
        let p = try Shell.start(wrapper + args, log: log)
        processes.append(p)
        return p
    }

    public func teardown() {
        for p in processes where p.isRunning { p.terminate() }
        for p in processes { p.waitUntilExit() }
        processes = []
        for ns in namespaces.reversed() { _ = try? Shell.run(["ip", "netns", "del", ns], allowFailure: true) }
        namespaces = []
    }
}

/// A fresh directory only its creator knows (mkdtemp), never a predictable
/// path in /tmp; the caller removes it.
public func makeScratchDirectory(_ prefix: String) throws -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let dir = mkdtemp(&template) else {
        throw RunnerError("mkdtemp /tmp/\(prefix)-XXXXXX: \(String(cString: strerror(errno)))")
    }
    return String(cString: dir)
}
