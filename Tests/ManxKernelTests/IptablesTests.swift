import ManxCompiler
import ManxIptables
import ManxModel
import XCTest

/// The iptables dataplane in a namespace of its own: atomic apply, changes,
/// and removal of only its own chains, jump and sets.
final class IptablesTests: XCTestCase {
    static let resources = """
    apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: shop, labels: {app: web}, annotations: {manx.io/interface: vweb}}
    status: {podIP: 10.0.0.1}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: client, namespace: shop, labels: {app: client}, annotations: {manx.io/interface: vclient}}
    status: {podIP: 10.0.0.2}
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: web, namespace: shop}
    spec:
      podSelector: {matchLabels: {app: web}}
      ingress: [{from: [{podSelector: {matchLabels: {app: client}}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.9.0.0/16]}}], ports: [{port: 80}]}]
    """

    func testApplyChangeAndUninstallOnlyTouchOwnState() throws {
        try requireKernel()
        for backend in IptablesDataplane.Backend.allCases {
            let netns = testPrefix("ipt\(backend.rawValue.prefix(1))")
            try sh("ip", "netns", "add", netns)
            defer { _ = try? sh("ip", "netns", "del", netns, allowFailure: true) }
            let ipt = backend == .nft ? "iptables-nft" : "iptables-legacy"
            try sh("ip", "netns", "exec", netns, ipt, "-N", "FOREIGN")
            try sh("ip", "netns", "exec", netns, ipt, "-A", "FORWARD", "-j", "FOREIGN")
            try sh("ip", "netns", "exec", netns, "ipset", "create", "foreign", "hash:ip")

            let compiler = PolicyCompiler()
            let dataplane = try IptablesDataplane(backend: backend, netns: netns)
            let state = compiler.compile(try ResourceSet.decode(files: [("r.yaml", Self.resources)]))
            let report = try dataplane.apply(state)
            XCTAssertGreaterThan(report.rules, 2)
            var saved = try sh("ip", "netns", "exec", netns, "\(ipt)-save", "-t", "filter")
            XCTAssertTrue(saved.contains("-A FORWARD -j manx-FORWARD"), saved)
            XCTAssertTrue(saved.contains("-A manx-FORWARD -o vweb -j manx-rs"), saved)
            // Workload guards first (source binding, no tunnels), and pod-to-node traffic policed too.
            XCTAssertTrue(saved.contains("-A INPUT -j manx-INPUT"), saved)
            XCTAssertTrue(saved.contains("-A manx-from-wl ! -s 10.0.0.1/32 -i vweb"), saved)
            XCTAssertTrue(saved.contains("-A manx-from-wl -i vclient -p udp -m udp --dport 4789"), saved)
            XCTAssertTrue(saved.contains("-A manx-FORWARD -j manx-from-wl\n-A manx-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"), saved)
            XCTAssertTrue(saved.contains("--dport 80"), saved)
            let sets = try sh("ip", "netns", "exec", netns, "ipset", "list")
            XCTAssertTrue(sets.contains("10.9.0.0/16 nomatch"), "except becomes a nomatch entry:\n\(sets)")

            // A change replaces the rule set chain; the old one goes.
            let oldChains = Set(saved.split(separator: "\n").filter { $0.hasPrefix(":manx-rs") })
            let changed = compiler.compile(try ResourceSet.decode(files: [("r.yaml", Self.resources.replacingOccurrences(of: "port: 80", with: "port: 443"))]))
            try dataplane.apply(changed)
            saved = try sh("ip", "netns", "exec", netns, "\(ipt)-save", "-t", "filter")
            XCTAssertTrue(saved.contains("--dport 443") && !saved.contains("--dport 80 "), saved)
            XCTAssertTrue(oldChains.isDisjoint(with: Set(saved.split(separator: "\n").filter { $0.hasPrefix(":manx-rs") })))
            XCTAssertEqual(saved.components(separatedBy: "-j manx-FORWARD").count, 2, "one jump only")
            XCTAssertEqual(saved.components(separatedBy: "-A INPUT -j manx-INPUT").count, 2, "one jump only")

            try dataplane.uninstall()
            saved = try sh("ip", "netns", "exec", netns, "\(ipt)-save", "-t", "filter")
            XCTAssertFalse(saved.contains("manx-"), saved)
            XCTAssertTrue(saved.contains("-A FORWARD -j FOREIGN"), "foreign rules stay")
            let after = try sh("ip", "netns", "exec", netns, "ipset", "list", "-n")
            XCTAssertEqual(after.split(separator: "\n"), ["foreign"])
        }
    }
}
