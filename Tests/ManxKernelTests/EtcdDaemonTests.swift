import Foundation
import ManxConformance
import ManxDataplane
import ManxNodeState
import XCTest

/// manxd with etcd as its datastore, on a simulated node with real pods:
/// etcd runs in a namespace of its own, reached over a veth that a test
/// can cut.
final class EtcdDaemonTests: XCTestCase {
    var lab: Lab!
    var work = ""
    var paths = NodePaths()
    var member: EtcdMember!
    var etcdNetns = ""
    var client = ""
    var clientIface = "", webIface = ""
    /// The node's end of the link to etcd.
    var link = ""
    var started = Date()

    override func setUpWithError() throws {
        try requireKernel()
        try requireEtcd()
        started = Date()
        let prefix = testPrefix("ed")
        lab = Lab(prefix: prefix)
        paths = NodePaths(node: prefix)
        work = try makeScratchDirectory("\(prefix)-work")
        try lab.createNode()
        let (clientNetns, c) = try lab.addPod("c", ip: "10.203.0.1")
        let (webNetns, w) = try lab.addPod("w", ip: "10.203.0.2")
        client = clientNetns
        clientIface = c
        webIface = w
        etcdNetns = "\(prefix)-etcd"
        link = "\(prefix)e"
        try lab.createNamespace(etcdNetns)
        try sh("ip", "link", "add", link, "netns", lab.node, "type", "veth", "peer", "name", "eth0", "netns", etcdNetns)
        try sh("ip", "-n", lab.node, "addr", "add", "10.204.0.1/30", "dev", link)
        try sh("ip", "-n", lab.node, "link", "set", link, "up")
        try sh("ip", "-n", etcdNetns, "addr", "add", "10.204.0.2/30", "dev", "eth0")
        try sh("ip", "-n", etcdNetns, "link", "set", "eth0", "up")
        member = EtcdMember(name: "m1", host: "10.204.0.2", netns: etcdNetns, dataDirectory: work + "/etcd")
        try startEtcd()

        try apply("pods", DaemonTests.resources
            .replacingOccurrences(of: "IFACE_CLIENT", with: clientIface).replacingOccurrences(of: "IFACE_WEB", with: webIface))
        _ = try lab.spawn(in: webNetns, [try productPath("manx-probe"), "serve", "--ports", "80,81"], log: "\(work)/serve.log")
        _ = try lab.spawn(in: lab.node, [try productPath("manxd"), "--etcd-endpoints", member.clientURL, "--node", prefix],
                          log: "\(work)/manxd.log", needsPins: true)
        try waitApplied()
    }

    override func tearDownWithError() throws {
        member?.stop()
        lab?.teardown()
        if lab != nil { removeTestPins(paths) }
        try? FileManager.default.removeItem(atPath: paths.stateDirectory)
        if !work.isEmpty { try? FileManager.default.removeItem(atPath: work) }
    }

    var etcdRun = 0
    func startEtcd() throws {
        etcdRun += 1
        try member.start(cluster: [member], token: "manx-\(lab.prefix)", log: "\(work)/etcd\(etcdRun).log")
        try member.waitReady()
    }

    /// `bpfctl apply` from the etcd namespace.
    func apply(_ name: String, _ yaml: String) throws {
        let file = "\(work)/\(name).yaml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        try sh("ip", "netns", "exec", etcdNetns, try productPath("bpfctl"), "apply", "-f", file, "--etcd-endpoints", member.clientURL)
    }

    var log: String { (try? String(contentsOfFile: "\(work)/manxd.log", encoding: .utf8)) ?? "" }

    /// Until manxd has applied etcd's current revision.
    @discardableResult
    func waitApplied() throws -> NodeMetadata {
        let revision = try member.revision()
        var meta: NodeMetadata?
        do {
            try waitUntil("manxd applies revision \(revision)") {
                meta = try? NodeMetadata.read(paths)
                // appliedAt is ISO 8601 to the second: a pass in the test's
                // first second is this run's too.
                return (meta?.appliedRevision ?? 0) >= revision && meta?.datastoreError == nil
                    && (meta?.appliedAt ?? .distantPast) >= Date(timeIntervalSince1970: started.timeIntervalSince1970.rounded(.down))
            }
        } catch {
            XCTFail("\(error); manxd log:\n\(log)")
            throw error
        }
        return meta!
    }

    func connects(_ port: Int = 80) throws -> Bool {
        let out = try sh("ip", "netns", "exec", client, try productPath("manx-probe"), "probe", "--timeout-ms", "700", "tcp:10.203.0.2:\(port)")
        return out.hasSuffix("ok\n")
    }

    func policy(allowing app: String, port: String = "http") -> String {
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web, namespace: demo}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{podSelector: {matchLabels: {app: \(app)}}}], ports: [{port: \(port)}]}]
        """
    }

    func testEnforcesFromEtcdAndKeepsEnforcingWithoutIt() throws {
        XCTAssertTrue(try connects(), "no policy: allowed")
        try apply("policy", policy(allowing: "nobody"))
        try waitApplied()
        XCTAssertFalse(try connects(), "isolated: denied")
        // `bpfctl get` reads it back from etcd.
        let got = try sh("ip", "netns", "exec", etcdNetns, try productPath("bpfctl"), "get", "np", "-n", "demo", "-o", "yaml",
                         "--etcd-endpoints", member.clientURL)
        XCTAssertTrue(got.contains("name: web") && got.contains("app: nobody"), got)

        // etcd gone: the node says so and keeps enforcing the last state.
        member.stop()
        try waitUntil("manxd reports etcd unreachable") { (try? NodeMetadata.read(paths))?.datastoreError != nil }
        XCTAssertFalse(try connects(), "still enforced without etcd")
        XCTAssertTrue(log.contains("datastore unreachable; the last state stays in force"), log)

        // Back: changes flow again.
        try startEtcd()
        try apply("policy", policy(allowing: "client"))
        try waitApplied()
        XCTAssertTrue(try connects())
        XCTAssertFalse(try connects(81))
        XCTAssertTrue(log.contains("datastore reachable again"), log)
    }

    /// Cut off from etcd while a change is written and its history
    /// compacted, the node lists again when it is back, decodes only the
    /// key that changed, and rewrites only what that change touches.
    func testRelistsAfterCompactionAndRewritesOnlyTheChange() throws {
        try apply("policy", policy(allowing: "client"))
        try waitApplied()
        XCTAssertTrue(try connects(80))
        XCTAssertFalse(try connects(81))

        try sh("ip", "-n", lab.node, "link", "set", link, "down")
        try waitUntil("manxd notices it is cut off") { (try? NodeMetadata.read(paths))?.datastoreError != nil }
        try apply("policy", policy(allowing: "client", port: "81"))
        // One more write, outside Manx's keys, and the history up to it gone:
        // the node's next revision no longer exists.
        try member.etcdctl(["put", "/elsewhere", "x"])
        try member.etcdctl(["compact", "\(try member.revision())"])
        try sh("ip", "-n", lab.node, "link", "set", link, "up")
        try waitApplied()

        XCTAssertTrue(try connects(81), "the change made while cut off is in force")
        XCTAssertFalse(try connects(80))
        let lines = log.split(separator: "\n")
        let relist = try XCTUnwrap(lines.last { $0.contains("datastore listed again") }, log)
        XCTAssertTrue(relist.contains("keysDecoded=1 "), "only the changed key is decoded: \(relist)")
        let applied = try XCTUnwrap(lines.last { $0.contains(" applied") }, log)
        XCTAssertTrue(applied.contains("ipcacheChanges=0 "), "no address changed identity: \(applied)")
        XCTAssertTrue(applied.contains("rulesetsAdded=1 "), "one new rule set, for the web pod's ingress: \(applied)")
    }
}
