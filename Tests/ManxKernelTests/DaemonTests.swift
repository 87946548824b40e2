import Foundation
import ManxConformance
import ManxDataplane
import ManxDatastore
import ManxNodeState
import XCTest

/// manxd on a simulated node with real pods and real connections.
final class DaemonTests: XCTestCase {
    var lab: Lab!
    var dsDir = ""
    var logDir = ""
    var paths = NodePaths()
    var manxd: Process?

    static let resources = """
    apiVersion: v1
    kind: Namespace
    metadata: {name: demo}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client, namespace: demo, labels: {app: client}, annotations: {manx.io/interface: IFACE_CLIENT}}
    status: {podIP: 10.203.0.1}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: demo, labels: {app: web}, annotations: {manx.io/interface: IFACE_WEB}}
    spec: {containers: [{name: web, ports: [{name: http, containerPort: 80}]}]}
    status: {podIP: 10.203.0.2}
    """

    static func policy(allowing app: String) -> String {
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: web, namespace: demo}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{podSelector: {matchLabels: {app: \(app)}}}], ports: [{port: http}]}]
        """
    }

    var client = "", web = ""

    override func setUpWithError() throws {
        try requireKernel()
        let prefix = testPrefix("d")
        lab = Lab(prefix: prefix)
        paths = NodePaths(node: prefix)
        dsDir = try makeScratchDirectory("\(prefix)-ds")
        logDir = try makeScratchDirectory("\(prefix)-log")
        try lab.createNode()
        let (clientNetns, clientIface) = try lab.addPod("c", ip: "10.203.0.1")
        let (webNetns, webIface) = try lab.addPod("w", ip: "10.203.0.2")
        client = clientNetns
        web = webNetns
        try DirectoryDatastore(directory: dsDir).write("pods.yaml", Self.resources
            .replacingOccurrences(of: "IFACE_CLIENT", with: clientIface).replacingOccurrences(of: "IFACE_WEB", with: webIface))
        _ = try lab.spawn(in: web, [try productPath("manx-probe"), "serve", "--ports", "80,81"], log: "\(logDir)/serve.log")
        try startDaemon()
    }

    override func tearDownWithError() throws {
        lab?.teardown()
        try? FileManager.default.removeItem(atPath: dsDir)
        try? FileManager.default.removeItem(atPath: paths.pinRoot)
        try? FileManager.default.removeItem(atPath: paths.stateDirectory)
        if !logDir.isEmpty { try? FileManager.default.removeItem(atPath: logDir) }
    }

    func startDaemon() throws {
        manxd = try lab.spawn(in: lab.node, [try productPath("manxd"), "--datastore", dsDir, "--node", lab.prefix],
                              log: "\(logDir)/manxd.log", needsPins: true)
        try waitApplied()
    }

    /// Until the daemon's metadata shows the datastore's current content applied (or rejected).
    @discardableResult
    func waitApplied() throws -> NodeMetadata {
        let digest = try DirectoryDatastore(directory: dsDir).snapshot().digest
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let m = try? NodeMetadata.read(paths), m.appliedDigest == digest || m.rejectedDigest == digest { return m }
            usleep(20_000)
        }
        let log = (try? String(contentsOfFile: "\(logDir)/manxd.log", encoding: .utf8)) ?? ""
        throw NSError(domain: "DaemonTests", code: 1, userInfo: [NSLocalizedDescriptionKey: "manxd did not apply within 20s; log:\n\(log)"])
    }

    func connects(_ port: Int = 80) throws -> Bool {
        let out = try sh("ip", "netns", "exec", client, try productPath("manx-probe"), "probe", "--timeout-ms", "700", "tcp:10.203.0.2:\(port)")
        return out.hasSuffix("ok\n")
    }

    func attachedProgramIDs() throws -> String {
        try sh("tc", "-n", lab.node, "filter", "show", "dev", "\(lab.prefix)w", "ingress")
            .split(separator: " ").filter { $0.hasPrefix("id") || Int($0) != nil }.joined(separator: " ")
    }

    func testEnforcesFollowsChangesAndSurvivesRestart() throws {
        let ds = DirectoryDatastore(directory: dsDir)
        XCTAssertTrue(try connects(), "no policy: allowed")
        let programs = try attachedProgramIDs()

        try ds.write("policy.yaml", Self.policy(allowing: "nobody"))
        try waitApplied()
        // Denied flows are reported as flow events, with the rule and peer named.
        let events = Process()
        events.executableURL = URL(fileURLWithPath: try productPath("bpfctl"))
        events.arguments = ["events", "--node", lab.prefix, "-o", "json", "--count", "1", "--seconds", "10"]
        let eventOut = Pipe()
        events.standardOutput = eventOut
        try events.run()
        usleep(300_000)
        XCTAssertFalse(try connects(), "isolated: denied")
        events.waitUntilExit()
        let event = String(decoding: eventOut.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(event.contains(#""verdict":"deny""#) && event.contains(#""peer":"demo\/client""#)
                      && event.contains(#""destination":"10.203.0.2:80""#), event)

        try ds.write("policy.yaml", Self.policy(allowing: "client"))
        try waitApplied()
        XCTAssertTrue(try connects(80))
        XCTAssertFalse(try connects(81), "only the named port is allowed")
        XCTAssertEqual(try attachedProgramIDs(), programs, "changes are map updates, programs stay")

        // A bad batch changes nothing and says why.
        try ds.write("broken.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: demo}\nspec: {podSelector: {}, ingress: [{ports: [{port: 99999}]}]}\n")
        let meta = try waitApplied()
        XCTAssertTrue(meta.error?.contains("broken.yaml: NetworkPolicy demo/x: spec.ingress[0].ports[0].port: port 99999 is out of range") ?? false, meta.error ?? "no error")
        XCTAssertTrue(try connects(80), "the previous state stays in force")
        try ds.remove("broken.yaml")

        // The daemon exits; enforcement stays.
        try ds.write("policy.yaml", Self.policy(allowing: "nobody"))
        try waitApplied()
        manxd?.terminate()
        manxd?.waitUntilExit()
        XCTAssertFalse(try connects(), "still enforced with manxd stopped")

        // A new daemon adopts the pinned maps and carries on.
        try ds.write("policy.yaml", Self.policy(allowing: "client"))
        try startDaemon()
        XCTAssertTrue(try connects())

        // bpfctl reads the pinned maps of the running node.
        let json = try sh(try productPath("bpfctl"), "dump", "--node", lab.prefix, "-o", "json")
        let report = try JSONDecoder().decode(DumpReport.self, from: Data(json.utf8))
        let webView = try XCTUnwrap(report.endpoints.first { $0.workload == "demo/web" })
        XCTAssertTrue(webView.ingressPolicy.contains { $0.action == "Allow" && $0.peer == "demo/client" && $0.ports == "80" })
        XCTAssertGreaterThan(webView.counters["ingress"]?["allow_new"] ?? 0, 0)
        XCTAssertGreaterThan(webView.counters["ingress"]?["drop_default"] ?? 0, 0)
        XCTAssertFalse(report.conntrack.isEmpty)
        let text = try sh(try productPath("bpfctl"), "dump", "--node", lab.prefix)
        XCTAssertTrue(text.contains("Endpoint demo/web 10.203.0.2"), text)
        XCTAssertTrue(text.contains("conntrack: ") && text.contains("of 131072 entries"), text)
    }

    /// An endpoint that goes leaves its programs on its interface, which
    /// then drops everything: a veth left behind is never unpoliced.
    func testRemovedEndpointsInterfaceFailsClosed() throws {
        XCTAssertTrue(try connects(), "no policy: allowed")
        let programs = try attachedProgramIDs()
        let ds = DirectoryDatastore(directory: dsDir)
        let pods = try String(contentsOfFile: "\(dsDir)/pods.yaml", encoding: .utf8)
        try ds.write("pods.yaml", pods.components(separatedBy: "---").filter { !$0.contains("name: web") }.joined(separator: "---"))
        let meta = try waitApplied()
        XCTAssertFalse(meta.endpoints.contains { $0.workload == "demo/web" })
        XCTAssertEqual(try attachedProgramIDs(), programs, "the programs stay on the interface")
        XCTAssertFalse(try connects(), "an interface without an endpoint drops")
    }
}

/// The operator CLI's commands that need no kernel state.
final class CLITests: XCTestCase {
    func testSelectorMatchCommand() throws {
        let bpfctl = try productPath("bpfctl")
        XCTAssertEqual(try sh(bpfctl, "selector", "match", "app == 'web' && has(tier)", "--labels", #"{"app":"web","tier":"1"}"#), "true\n")
        XCTAssertEqual(try sh(bpfctl, "selector", "match", "app in {'a','b'}", "--labels", #"{"app":"c"}"#), "false\n")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bpfctl)
        p.arguments = ["selector", "match", "app === 'web'"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 2)
        XCTAssertTrue(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("position"))
    }
}
