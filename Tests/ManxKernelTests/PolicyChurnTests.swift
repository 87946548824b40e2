import Foundation
import ManxCompiler
import ManxConformance
import ManxDataplane
import ManxDatastore
import ManxNodeState
import XCTest

/// manxd on one simulated node while policy churns: policies that reshape
/// peer classes are rewritten several times a second, and manxd restarts.
/// No allowed connection may be refused or even have its SYN retransmitted,
/// no denied one may get through, and a restart numbers nothing anew.
class PolicyChurnTestCase: XCTestCase {
    var lab: Lab!
    var dsDir = ""
    var logDir = ""
    var paths = NodePaths()
    var manxd: Process?
    var daemonArguments: [String] = []

    override func setUpWithError() throws {
        try requireKernel()
        let prefix = testPrefix("p")
        lab = Lab(prefix: prefix)
        paths = NodePaths(node: prefix)
        dsDir = try makeScratchDirectory("\(prefix)-ds")
        logDir = try makeScratchDirectory("\(prefix)-log")
        try lab.createNode()
    }

    override func tearDownWithError() throws {
        if let manxd, manxd.isRunning {
            manxd.terminate()
            manxd.waitUntilExit()
        }
        // The daemon's rules, sets and pins go with it.
        let uninstall = ["nsenter", "--net=/run/netns/\(lab.node)", try productPath("manxd"), "--node", lab.prefix,
                         "--datastore", dsDir, "--uninstall"] + daemonArguments
        _ = try? sh(uninstall, allowFailure: true)
        lab?.teardown()
        removeTestPins(paths)
        for dir in [dsDir, logDir, paths.stateDirectory] { try? FileManager.default.removeItem(atPath: dir) }
    }

    func startDaemon() throws {
        manxd = try lab.spawn(in: lab.node, [try productPath("manxd"), "--datastore", dsDir, "--node", lab.prefix] + daemonArguments,
                              log: "\(logDir)/manxd.log", needsPins: true)
    }

    func restartDaemon() throws {
        manxd?.terminate()
        manxd?.waitUntilExit()
        try startDaemon()
    }

    /// Until the daemon's metadata shows the datastore's current content applied.
    @discardableResult
    func waitApplied() throws -> NodeMetadata {
        let digest = try DirectoryDatastore(directory: dsDir).snapshot().digest
        var meta: NodeMetadata?
        do {
            try waitUntil("manxd applies the datastore") {
                meta = try? NodeMetadata.read(paths)
                return meta?.appliedDigest == digest
            }
        } catch {
            let log = (try? String(contentsOfFile: "\(logDir)/manxd.log", encoding: .utf8)) ?? ""
            throw NSError(domain: "churn", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(error); error: \(meta?.error ?? "-"); log:\n\(log.suffix(3000))"])
        }
        return meta!
    }

    func pod(_ name: String, _ ip: String, _ labels: String, _ iface: String) -> String {
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: \(name), namespace: churn, labels: {\(labels)}, annotations: {manx.io/interface: \(iface)}}
        status: {podIP: \(ip)}
        ---

        """
    }

    /// The namespace, and a policy under which pods labelled `app: selected`
    /// accept TCP on `port` only from pods labelled `app: client`.
    static func clientOnly(_ name: String, selected: String, port: Int) -> String {
        """
        apiVersion: v1
        kind: Namespace
        metadata: {name: churn}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: \(name), namespace: churn}
        spec:
          podSelector: {matchLabels: {app: \(selected)}}
          ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: \(port)}]}]
        """
    }

    /// A counter of the client's TCP stack (its namespace's /proc/net/netstat).
    func tcpExt(_ netns: String, _ name: String) throws -> Int {
        let lines = try sh("ip", "netns", "exec", netns, "cat", "/proc/net/netstat").split(separator: "\n")
        for i in stride(from: 0, to: lines.count - 1, by: 2) where lines[i].hasPrefix("TcpExt:") {
            let names = lines[i].split(separator: " "), values = lines[i + 1].split(separator: " ")
            if let at = names.firstIndex(of: Substring(name)) { return Int(values[at]) ?? -1 }
        }
        return -1
    }

    /// New connections in `seconds`, and how many failed (manx-probe connrate).
    func connrate(_ netns: String, _ target: String, seconds: Double) throws -> (ok: Int, failed: Int) {
        let out = try sh("ip", "netns", "exec", netns, try productPath("manx-probe"), "connrate", "--seconds", "\(seconds)",
                         "--parallel", "4", target)
        let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        return (json?["connections"] as? Int ?? -1, json?["failed"] as? Int ?? -1)
    }
}

final class PolicyChurnTests: PolicyChurnTestCase {
    static let base = clientOnly("web", selected: "web", port: 8080)

    /// Policies for pod-2 only, whose peers (pods by label, CIDRs) change
    /// every variant: each rewrite gives the client and the CIDR regions
    /// new identities, which pod-3's rule set must follow.
    static func churn(_ k: Int) -> String {
        let clientClass = k % 2 == 0 ? "app == 'client'" : "app in {'client', 'stranger'}"
        return """
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: churn}
        spec:
          selector: app == 'other'
          ingress:
          - {action: Allow, source: {selector: "\(clientClass)"}}
          - {action: Deny, source: {nets: [10.204.0.0/\(28 + k % 4)], notNets: [10.204.0.\(k % 3 + 1)/32]}}
          - {action: Allow, protocol: TCP, source: {nets: [192.0.\(k % 5).0/24]}, destination: {ports: [\(1000 + k % 7)]}}
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: churn-\(k % 3), namespace: churn}
        spec:
          podSelector: {matchLabels: {app: other}}
          ingress: [{from: [{ipBlock: {cidr: 10.204.0.0/24, except: [10.204.0.\(k % 4)/32]}}]}]
        """
    }

    func runChurn(restartInTheMiddle: Bool) throws {
        var pods = ""
        var names: [String: String] = [:]
        for (name, ip, labels) in [("c", "10.204.0.1", "app: client"), ("t", "10.204.0.2", "app: other"),
                                   ("w", "10.204.0.3", "app: web"), ("s", "10.204.0.4", "app: stranger")] {
            let (netns, iface) = try lab.addPod(name, ip: ip)
            names[name] = netns
            pods += pod("pod-\(name)", ip, labels, iface)
        }
        let ds = DirectoryDatastore(directory: dsDir)
        try ds.write("pods.yaml", pods + Self.base)
        try ds.write("churn.yaml", Self.churn(0))
        _ = try lab.spawn(in: names["w"]!, [try productPath("manx-probe"), "serve", "--ports", "8080"], log: "\(logDir)/serve.log")
        try startDaemon()
        try waitApplied()
        try waitUntil("the server answers") { (try? connrate(names["c"]!, "10.204.0.3:8080", seconds: 0.3).ok) ?? 0 > 0 }

        // Churn in the background: a rewrite every 150 ms.
        let stop = ManagedAtomicFlag()
        let rewrites = ManagedCounter()
        let churner = Thread {
            var k = 1
            while !stop.isSet {
                try? ds.write("churn.yaml", Self.churn(k))
                k += 1
                rewrites.increment()
                usleep(150_000)
            }
        }
        churner.start()
        defer { stop.set() }

        let retransBefore = try tcpExt(names["c"]!, "TCPSynRetrans")
        var allowed = 0, refused = 0, strangers = 0, restarted = false
        let started = Date()
        // The stranger tries all along, in parallel with the client.
        // At least 10,000 connections, over at least 8 s of churn.
        while (allowed < 10_000 || Date().timeIntervalSince(started) < 8) && Date().timeIntervalSince(started) < 120 {
            let stranger = try lab.spawn(in: names["s"]!, [try productPath("manx-probe"), "connrate", "--seconds", "1", "--parallel", "2", "10.204.0.3:8080"],
                                         log: "\(logDir)/stranger.log")
            let (ok, failed) = try connrate(names["c"]!, "10.204.0.3:8080", seconds: 1)
            allowed += ok
            refused += failed
            stranger.waitUntilExit()
            let out = (try? String(contentsOfFile: "\(logDir)/stranger.log", encoding: .utf8)) ?? ""
            let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
            strangers += json?["connections"] as? Int ?? 1
            if restartInTheMiddle && !restarted && Date().timeIntervalSince(started) >= 4 {
                try restartDaemon()
                restarted = true
            }
        }
        stop.set()
        while !churner.isFinished { usleep(10_000) }
        let retrans = try tcpExt(names["c"]!, "TCPSynRetrans") - retransBefore
        let log = (try? String(contentsOfFile: "\(logDir)/manxd.log", encoding: .utf8)) ?? ""
        let applied = log.split(separator: "\n").filter { $0.hasSuffix("] applied") }
        let applies = applied.count
        // What each apply cost, as manxd logs it (durations as "S seconds").
        func median(_ field: String) -> Double? {
            let values = applied.compactMap { line -> Double? in
                guard let r = line.range(of: "\(field)=") else { return nil }
                return Double(line[r.upperBound...].prefix { "0123456789.e-".contains($0) })
            }.sorted()
            return values.isEmpty ? nil : values[values.count / 2]
        }
        let ms = { (field: String) in median(field).map { String(format: "%.1f ms", $0 * 1000) } ?? "-" }
        print("churn applies (medians): \(ms("duration")) each, \(ms("waitedForPrograms")) waiting for programs, "
              + "\(ms("revoking")) revoking \(Int(median("conntrackRevoked") ?? 0)) conntrack entries")
        print("churn \(daemonArguments.isEmpty ? "bpf" : daemonArguments.joined(separator: " ")): \(allowed) connections, "
              + "\(refused) refused, \(retrans) SYN retransmissions, \(strangers) stranger connections, "
              + "\(rewrites.value) policy rewrites (\(applies) applies) in \(Int(Date().timeIntervalSince(started))) s"
              + (restarted ? ", manxd restarted once" : ""))
        XCTAssertGreaterThanOrEqual(allowed, 10_000)
        XCTAssertEqual(refused, 0, "allowed connections refused")
        XCTAssertEqual(retrans, 0, "SYNs retransmitted: a SYN was dropped")
        XCTAssertEqual(strangers, 0, "denied client got through")
        XCTAssertGreaterThan(rewrites.value, 20)
        XCTAssertEqual(restarted, restartInTheMiddle)

        // A restart re-numbers nothing: the same content keeps every id.
        let before = try waitApplied()
        try restartDaemon()
        let digest = try DirectoryDatastore(directory: dsDir).snapshot().digest
        try waitUntil("the restarted manxd applies") { ((try? NodeMetadata.read(paths))?.generation ?? 0) > before.generation }
        let after = try waitApplied()
        XCTAssertEqual(after.appliedDigest, digest)
        XCTAssertEqual(after.rules, before.rules, "rule ids (and their hit counters) belong to the same rules")
        XCTAssertEqual(after.identities, before.identities)
        XCTAssertEqual(after.endpoints.map { "\($0.workload) \($0.identity) \($0.ingressRuleset) \($0.egressRuleset)" }.sorted(),
                       before.endpoints.map { "\($0.workload) \($0.identity) \($0.ingressRuleset) \($0.egressRuleset)" }.sorted())
        XCTAssertEqual(try connrate(names["c"]!, "10.204.0.3:8080", seconds: 0.5).failed, 0)
    }

    func testChurnBPF() throws { try runChurn(restartInTheMiddle: true) }

    func testChurnIptablesNft() throws {
        daemonArguments = ["--dataplane", "iptables"]
        try runChurn(restartInTheMiddle: true)
    }

    func testChurnIptablesLegacy() throws {
        daemonArguments = ["--dataplane", "iptables-legacy"]
        try runChurn(restartInTheMiddle: true)
    }
}

/// A flag and a counter shared with the churn thread.
final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    var isSet: Bool { lock.withLock { flag } }
    func set() { lock.withLock { flag = true } }
}

final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func increment() { lock.withLock { count += 1 } }
}

/// A peer relabelled out of what policy allows loses its established
/// flows within 1 s: when the server's rule set changes (no other pod has
/// the old labels) and when it does not (another pod keeps them, so the
/// rule set's content and id stay, and only the conntrack revocation acts).
final class RelabelTests: PolicyChurnTestCase {
    static let policy = clientOnly("server", selected: "server", port: 7000)

    func relabel(anotherClient: Bool) throws {
        var ifaces: [String: String] = [:], netns: [String: String] = [:]
        for (name, ip) in [("a", "10.204.1.1"), ("b", "10.204.1.2"), ("c", "10.204.1.3")] {
            (netns[name], ifaces[name]) = try lab.addPod(name, ip: ip)
        }
        func pods(_ clientLabel: String) -> String {
            pod("pod-1", "10.204.1.1", "app: \(clientLabel)", ifaces["a"]!) + pod("pod-2", "10.204.1.2", "app: server", ifaces["b"]!)
                + pod("pod-3", "10.204.1.3", "app: \(anotherClient ? "client" : "idle")", ifaces["c"]!)
        }
        let ds = DirectoryDatastore(directory: dsDir)
        try ds.write("pods.yaml", pods("client") + Self.policy)
        _ = try lab.spawn(in: netns["b"]!, [try productPath("manx-probe"), "echo", "--port", "7000"], log: "\(logDir)/echo.log")
        try startDaemon()
        let before = try waitApplied()
        let holder = try lab.spawn(in: netns["a"]!, [try productPath("manx-probe"), "hold", "--interval-ms", "100", "--seconds", "5",
                                                     "10.204.1.2:7000"], log: "\(logDir)/hold.log")
        func echoes() -> [Double] {
            ((try? String(contentsOfFile: "\(logDir)/hold.log", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { Double($0) }
        }
        try waitUntil("the held connection echoes") { echoes().count >= 10 }

        let relabelled = Date().timeIntervalSince1970 * 1000
        try ds.write("pods.yaml", pods("other") + Self.policy)
        let after = try waitApplied()
        let server = { (m: NodeMetadata) in m.endpoints.first { $0.workload == "churn/pod-2" }!.ingressRuleset }
        if anotherClient {
            XCTAssertEqual(server(after), server(before), "pod-3 keeps the class: the rule set's content and id stay")
        } else {
            XCTAssertNotEqual(server(after), server(before))
        }
        holder.waitUntilExit()
        let last = echoes().last ?? 0
        print("relabel (\(anotherClient ? "rule set unchanged" : "rule set changed")): last echo \(Int(last - relabelled)) ms after the relabel was written; "
              + "\(echoes().filter { $0 > relabelled }.count) echoes after it")
        XCTAssertLessThan(last - relabelled, 1000, "the established flow outlived the relabel by more than 1 s")
        XCTAssertEqual(try connrate(netns["a"]!, "10.204.1.2:7000", seconds: 1).ok, 0, "new connections are refused too")
    }

    func testRelabelledPeerLosesItsFlowWhenTheRuleSetStays() throws { try relabel(anotherClient: true) }

    func testRelabelledPeerLosesItsFlowWhenTheRuleSetChanges() throws { try relabel(anotherClient: false) }
}
