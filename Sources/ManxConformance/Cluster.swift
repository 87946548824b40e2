import Foundation
import ManxDatastore
import ManxDataplane
import ManxModel
import ManxNodeState

/// A simulated cluster: N nodes as network namespaces on a shared underlay,
/// each running `manxd`, and pods created through `manx-cni`.
///
/// The underlay is a bridge in its own namespace (`PREFIX-ul`), which also
/// routes between the node subnets (10.99.S.0/24) and plays the world
/// outside the cluster at 10.99.S.254. Every name starts with the prefix and
/// `teardown` removes all of it: namespaces, pins, state and the datastore.
public final class Cluster: @unchecked Sendable {
    public struct Options: Sendable {
        public var nodes = 3
        public var encapsulation: Encapsulation = .ipip
        /// Always or CrossSubnet (Never when the encapsulation is none).
        public var encapMode: EncapMode = .always
        /// Node subnets: nodes are spread over them round robin.
        public var subnets = 1
        public var poolCIDR = "10.10.0.0/16"
        public var blockSize = 26
        public var natOutgoing = false
        /// FelixConfiguration ipipMTU / vxlanMTU, nil: derived.
        public var podMTU: Int?
        /// VXLAN through a collect_md device instead of BPF-built headers.
        public var vxlanDevice = false
        /// etcd members (each in a namespace of its own on the underlay)
        /// as the datastore; 0: a directory.
        public var etcdMembers = 0
        public var binDirectory: String
        public init(binDirectory: String) { self.binDirectory = binDirectory }
    }

    public struct Pod: Sendable {
        public var key: String
        public var netns: String
        public var node: String
        public var ip: String
        public var hostInterface: String
    }

    public let prefix: String
    public let options: Options
    public let lab: Lab
    public let datastore: ClusterDatastore
    public var underlay: String { "\(prefix)-ul" }
    public private(set) var pods: [String: Pod] = [:]
    public var logs: String { "/tmp/\(prefix)-logs" }

    public init(prefix: String, options: Options) {
        self.prefix = prefix
        self.options = options
        lab = Lab(prefix: prefix)
        let members = (0..<options.etcdMembers).map { i in
            EtcdMember(name: "etcd\(i + 1)", host: Self.etcdAddress(i + 1), netns: "\(prefix)-etcd\(i + 1)",
                       dataDirectory: "/tmp/\(prefix)-logs/etcd\(i + 1)")
        }
        datastore = ClusterDatastore(directory: "/tmp/\(prefix)-datastore", members: members, binDirectory: options.binDirectory)
    }

    /// etcd member i (1-based) on the underlay, beside the nodes of subnet 0.
    public static func etcdAddress(_ i: Int) -> String { "10.99.0.\(200 + i)" }

    public var nodeNames: [String] { (1...options.nodes).map { "\(prefix)-n\($0)" } }

    /// Underlay address and subnet of node i (1-based).
    public func nodeAddress(_ i: Int) -> (address: String, subnet: Int) {
        let s = (i - 1) % options.subnets
        return ("10.99.\(s).\(i)", s)
    }

    public static func gateway(subnet: Int) -> String { "10.99.\(subnet).254" }

    // MARK: Bring-up

    public func up() throws {
        try? FileManager.default.removeItem(atPath: datastore.directory)
        try FileManager.default.createDirectory(atPath: datastore.directory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)

        try lab.createNamespace(underlay)
        try Shell.run(["ip", "netns", "exec", underlay, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        try Shell.run(["ip", "-n", underlay, "link", "add", "br0", "type", "bridge"])
        try Shell.run(["ip", "-n", underlay, "link", "set", "br0", "up"])
        for s in 0..<options.subnets {
            try Shell.run(["ip", "-n", underlay, "addr", "add", "\(Self.gateway(subnet: s))/24", "dev", "br0"])
        }
        try startEtcd()
        var resources: [String] = []
        for (index, node) in nodeNames.enumerated() {
            let (address, subnet) = nodeAddress(index + 1)
            try attachToUnderlay(node, port: "n\(index + 1)", address: address, subnet: subnet)
            try Shell.run(["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            resources.append("""
            apiVersion: projectcalico.org/v3
            kind: Node
            metadata: {name: \(node), labels: {manx.io/subnet: "s\(subnet)"}}
            spec: {bgp: {ipv4Address: \(address)/24}}
            """)
        }
        let mode = options.encapsulation == .none ? EncapMode.never : options.encapMode
        resources.append("""
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: \(prefix)-pool}
        spec:
          cidr: \(options.poolCIDR)
          blockSize: \(options.blockSize)
          ipipMode: \(options.encapsulation == .ipip ? mode.rawValue : "Never")
          vxlanMode: \(options.encapsulation == .vxlan ? mode.rawValue : "Never")
          natOutgoing: \(options.natOutgoing)
        """)
        if let mtu = options.podMTU {
            resources.append("""
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {ipipMTU: \(mtu), vxlanMTU: \(mtu)}
            """)
        }
        try datastore.write("cluster.yaml", resources.joined(separator: "\n---\n") + "\n")

        for node in nodeNames {
            var args = [bin("manxd")] + datastore.daemonArguments + ["--node", node, "--node-name", node, "--log-level", "info"]
            if options.vxlanDevice { args += ["--vxlan-device", "manx.vxlan"] }
            _ = try lab.spawn(in: node, args, log: "\(logs)/\(node).log", needsPins: true)
        }
        try waitApplied()
    }

    /// The etcd members, each in a namespace on the underlay bridge, as
    /// one cluster.
    private func startEtcd() throws {
        for (i, member) in datastore.members.enumerated() {
            try attachToUnderlay(member.netns!, port: "e\(i + 1)", address: member.host, subnet: 0)
        }
        for (i, member) in datastore.members.enumerated() {
            try member.start(cluster: datastore.members, token: prefix, log: "\(logs)/etcd\(i + 1).log")
        }
        for member in datastore.members { try member.waitReady() }
    }

    /// A new namespace on the underlay bridge: its eth0 at `address`/24 on
    /// port `port` of br0, default route via the subnet's gateway.
    private func attachToUnderlay(_ netns: String, port: String, address: String, subnet: Int) throws {
        try lab.createNamespace(netns)
        for cmd in [
            ["ip", "link", "add", port, "netns", underlay, "type", "veth", "peer", "name", "eth0", "netns", netns],
            ["ip", "-n", underlay, "link", "set", port, "master", "br0", "up"],
            ["ip", "-n", netns, "addr", "add", "\(address)/24", "dev", "eth0"],
            ["ip", "-n", netns, "link", "set", "eth0", "up"],
            ["ip", "-n", netns, "route", "add", "default", "via", Self.gateway(subnet: subnet)],
        ] { try Shell.run(cmd) }
    }

    private func bin(_ name: String) -> String { options.binDirectory + "/" + name }

    /// Waits until every node's daemon has the datastore's content in force;
    /// returns the error of a node that rejected it.
    @discardableResult
    public func waitApplied(timeout: Double = 30) throws -> String? {
        let target = try datastore.target()
        var rejected: String?
        try Self.waitFor("every manxd to apply the datastore (logs: \(logs))", timeout: timeout) {
            var done = true
            for node in nodeNames {
                guard let meta = try? NodeMetadata.read(NodePaths(node: node)) else { return false }
                switch ClusterDatastore.outcome(meta, target) {
                case .rejected(let error)?: rejected = error; return true
                case .applied?: break
                case nil: done = false
                }
            }
            return done
        }
        return rejected
    }

    static func waitFor(_ what: String, timeout: Double = 30, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            if Date() > deadline { throw RunnerError("timed out waiting for \(what)") }
            usleep(20_000)
        }
    }

    // MARK: Pods through the CNI plugin

    /// The network configuration manx-cni gets on a node.
    public func networkConfig(node: String) -> String {
        """
        {"cniVersion": "1.0.0", "name": "manx", "type": "manx-cni", \(datastore.cniFields), "nodename": "\(node)"}
        """
    }

    /// Creates the pod's namespace and runs CNI ADD on its node. The Pod
    /// resource (labels, ports, annotations) must already be in the datastore.
    @discardableResult
    public func addPod(_ key: String, node: String) throws -> Pod {
        let netns = "\(prefix)-\(key.replacingOccurrences(of: "/", with: "-"))"
        try lab.createNamespace(netns)
        let output = try cni("ADD", key: key, node: node, netns: netns)
        guard let result = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
              let ips = result["ips"] as? [[String: Any]], let address = ips.first?["address"] as? String,
              let interfaces = result["interfaces"] as? [[String: Any]], let host = interfaces.first?["name"] as? String
        else { throw RunnerError("manx-cni ADD for \(key) on \(node) printed no result: \(output)") }
        let pod = Pod(key: key, netns: netns, node: node, ip: String(address.split(separator: "/")[0]), hostInterface: host)
        pods[key] = pod
        return pod
    }

    public func deletePod(_ key: String) throws {
        guard let pod = pods[key] else { return }
        try cni("DEL", key: key, node: pod.node, netns: pod.netns)
        pods[key] = nil
    }

    @discardableResult
    func cni(_ command: String, key: String, node: String, netns: String) throws -> String {
        let parts = key.split(separator: "/")
        let env = [
            "CNI_COMMAND": command, "CNI_CONTAINERID": "\(prefix)-\(parts[0])-\(parts[1])",
            "CNI_NETNS": "/run/netns/\(netns)", "CNI_IFNAME": "eth0", "CNI_PATH": options.binDirectory,
            "CNI_ARGS": "K8S_POD_NAMESPACE=\(parts[0]);K8S_POD_NAME=\(parts[1])",
        ]
        return try Shell.run(["nsenter", "--net=/run/netns/\(node)", bin("manx-cni")], environment: env,
                             input: networkConfig(node: node))
    }

    // MARK: Teardown

    public func teardown() {
        // The members first, while they can still reach each other.
        for member in datastore.members { member.stop() }
        lab.teardown()
        Self.teardown(prefix: prefix)
    }

    /// Removes everything named with the prefix, whoever created it: the
    /// processes in its namespaces, the namespaces, pins, state and files.
    public static func teardown(prefix: String) {
        let all = (try? Shell.run(["ip", "netns", "list"])) ?? ""
        let mine = all.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
            .filter { $0.hasPrefix("\(prefix)-") }
        var pids: [pid_t] = []
        for ns in mine {
            let list = (try? Shell.run(["ip", "netns", "pids", ns], allowFailure: true)) ?? ""
            pids += list.split(separator: "\n").compactMap { pid_t($0) }
        }
        // manxd and the pods' servers end on SIGTERM (manxd after its
        // current sync): give them up to 5 s before the namespaces go, then
        // make sure nothing is left running.
        for pid in pids { kill(pid, SIGTERM) }
        for _ in 0..<50 where pids.contains(where: { kill($0, 0) == 0 }) { usleep(100_000) }
        for pid in pids { kill(pid, SIGKILL) }
        for ns in mine { _ = try? Shell.run(["ip", "netns", "del", ns], allowFailure: true) }
        let fm = FileManager.default
        for dir in ["/sys/fs/bpf/manx", "/run/manx"] {
            for name in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] where name.hasPrefix("\(prefix)-") {
                try? fm.removeItem(atPath: "\(dir)/\(name)")
            }
        }
        try? fm.removeItem(atPath: "/tmp/\(prefix)-datastore")
        try? fm.removeItem(atPath: "/tmp/\(prefix)-logs")
    }
}
