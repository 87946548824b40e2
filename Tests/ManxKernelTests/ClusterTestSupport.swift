import Foundation
import ManxConformance
import XCTest

extension XCTestCase {
    /// Brings a cluster up, runs the body, tears everything down even on failure.
    func withCluster(_ tag: String, nodes: Int = 2, _ configure: (inout Cluster.Options) -> Void = { _ in },
                     pods: [(key: String, node: Int)], policy: String? = nil,
                     _ body: (Cluster) throws -> Void) throws {
        try requireKernel()
        var options = Cluster.Options(binDirectory: URL(fileURLWithPath: try productPath("manxd")).deletingLastPathComponent().path)
        options.nodes = nodes
        configure(&options)
        let cluster = Cluster(prefix: testPrefix(tag), options: options)
        defer { cluster.teardown() }
        try cluster.up()
        var yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: net}\n"
        for p in pods {
            let name = p.key.split(separator: "/")[1]
            yaml += "---\napiVersion: v1\nkind: Pod\nmetadata: {name: \(name), namespace: net, labels: {app: \(name)}}\n"
        }
        try cluster.datastore.write("pods.yaml", yaml)
        if let policy { try cluster.datastore.write("policy.yaml", policy) }
        for p in pods { try cluster.addPod(p.key, node: cluster.nodeNames[p.node]) }
        // An ADD returns once its endpoint's status is out, at the flip; the
        // metadata of that pass (and the other nodes' passes) follow it.
        try cluster.waitApplied()
        try body(cluster)
    }
}

/// Raw frames for the attack tests: what a process with CAP_NET_RAW puts on
/// an interface (`manx-probe inject`), and what a namespace's kernel received.
enum RawFrames {
    /// Sends frames (their MACs replaced: the interface's, then `destination`)
    /// `count` times on an interface of a namespace.
    static func inject(in netns: String, on interface: String, to destination: [UInt8], _ frames: [[UInt8]], count: Int) throws {
        let own = try mac(of: interface, in: netns)
        let hex = frames.map { frame in (destination + own + Array(frame[12...])).map { String(format: "%02x", $0) }.joined() }
        try sh(["ip", "netns", "exec", netns, try productPath("manx-probe"), "inject", "--interface", interface, "--count", "\(count)"] + hex)
    }

    static func mac(of interface: String, in netns: String) throws -> [UInt8] {
        let text = try sh("ip", "-n", netns, "-br", "link", "show", "dev", interface).split(separator: " ").filter { !$0.isEmpty }[2]
        return text.split(separator: ":").map { UInt8($0, radix: 16)! }
    }

    /// IPv4 packets the namespace's kernel received (`Ip: InReceives`) while `sending` ran.
    static func arrivals(in netns: String, while sending: () throws -> Void) throws -> Int {
        let before = try ipInReceives(netns)
        try sending()
        usleep(300_000)
        return try ipInReceives(netns) - before
    }

    static func ipInReceives(_ netns: String) throws -> Int {
        let lines = try sh("ip", "netns", "exec", netns, "cat", "/proc/net/snmp").split(separator: "\n").filter { $0.hasPrefix("Ip: ") }
        let names = lines[0].split(separator: " "), values = lines[1].split(separator: " ")
        return Int(values[try XCTUnwrap(names.firstIndex(of: "InReceives"))])!
    }
}
