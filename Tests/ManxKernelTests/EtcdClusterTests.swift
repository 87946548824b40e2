import Foundation
import ManxConformance
import ManxDataplane
import ManxNodeState
import XCTest

/// Three Manx nodes on a three-member etcd, every member in a namespace of
/// its own on the underlay: losing members, losing all of them, and a node
/// cut off while the history it needs is compacted away.
final class EtcdClusterTests: XCTestCase {
    func testNodesRideOutEtcdFailuresAndAPartition() throws {
        try requireEtcd()
        try withCluster("ec", nodes: 3, { $0.encapsulation = .vxlan; $0.etcdMembers = 3 },
                        pods: [("net/a", 0), ("net/b", 1), ("net/c", 2)]) { c in
            let scratch = try makeScratchDirectory("\(c.prefix)-scratch")
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            for key in ["net/b", "net/c"] {
                _ = try c.lab.spawn(in: c.pods[key]!.netns, [try productPath("manx-probe"), "serve", "--ports", "80,81"],
                                    log: "\(scratch)/serve-\(key.replacingOccurrences(of: "/", with: "-")).log")
            }
            usleep(300_000)
            func connects(_ from: String, _ to: String, _ port: Int) throws -> Bool {
                try sh("ip", "netns", "exec", c.pods[from]!.netns, try productPath("manx-probe"), "probe", "--timeout-ms", "700",
                       "tcp:\(c.pods[to]!.ip):\(port)").hasSuffix("ok\n")
            }
            func policy(port: Int) -> String {
                """
                apiVersion: projectcalico.org/v3
                kind: GlobalNetworkPolicy
                metadata: {name: only-\(port)}
                spec:
                  selector: app in {'b', 'c'}
                  types: [Ingress]
                  ingress: [{action: Allow, protocol: TCP, destination: {ports: [\(port)]}}]
                """
            }
            func meta(_ node: Int) -> NodeMetadata? { try? NodeMetadata.read(NodePaths(node: c.nodeNames[node])) }
            let members = c.datastore.members

            try c.datastore.write("policy.yaml", policy(port: 80))
            XCTAssertNil(try c.waitApplied())
            XCTAssertTrue(try connects("net/a", "net/b", 80))
            XCTAssertFalse(try connects("net/a", "net/b", 81))

            // One member stopped: nothing changes, and changes still flow.
            members[0].stop()
            try c.datastore.write("policy.yaml", policy(port: 81))
            XCTAssertNil(try c.waitApplied())
            XCTAssertTrue(try connects("net/a", "net/c", 81))
            XCTAssertFalse(try connects("net/a", "net/c", 80))
            for i in 0..<3 { XCTAssertNil(meta(i)?.datastoreError, "node \(i + 1) still reads etcd") }

            // All three stopped: every node says so and keeps enforcing.
            members[1].stop()
            members[2].stop()
            try waitUntil("every node reports etcd unreachable") { (0..<3).allSatisfy { meta($0)?.datastoreError != nil } }
            XCTAssertTrue(try connects("net/a", "net/b", 81))
            XCTAssertFalse(try connects("net/a", "net/b", 80))
            XCTAssertFalse(try connects("net/a", "net/c", 80))
            for (i, member) in members.enumerated() {
                try member.start(cluster: members, token: c.prefix, log: "\(scratch)/etcd\(i + 1)-again.log")
            }
            for member in members { try member.waitReady() }
            try waitUntil("every node reads etcd again") { (0..<3).allSatisfy { meta($0)?.datastoreError == nil } }

            // Node 3 cut off from etcd; a change, then its history compacted away.
            let cut = c.nodeNames[2]
            for member in members { try sh("ip", "-n", cut, "route", "add", "blackhole", "\(member.host)/32") }
            try waitUntil("node 3 notices it is cut off") { meta(2)?.datastoreError != nil }
            try c.datastore.write("policy.yaml", policy(port: 80))
            // One more write (a key the nodes watch but do not follow), and
            // the history up to it gone.
            try members[1].etcdctl(["put", "/calico/ipam/v2/handle/not-a-pod", "{}"])
            try members[1].etcdctl(["compact", "\(try members[1].revision())"])
            XCTAssertTrue(try connects("net/a", "net/c", 81), "node 3 still enforces what it last had")
            for member in members { try sh("ip", "-n", cut, "route", "del", "blackhole", "\(member.host)/32") }
            XCTAssertNil(try c.waitApplied())
            XCTAssertTrue(try connects("net/a", "net/c", 80), "node 3 applied the change it missed")
            XCTAssertFalse(try connects("net/a", "net/c", 81))
            let log = try String(contentsOfFile: "/tmp/\(c.prefix)-logs/\(cut).log", encoding: .utf8).split(separator: "\n")
            let relist = try XCTUnwrap(log.last { $0.contains("datastore listed again") }, "node 3 relisted")
            XCTAssertTrue(relist.contains("keysDecoded=1 "), "only the changed key is decoded: \(relist)")
            let applied = try XCTUnwrap(log.last { $0.contains(" applied") })
            XCTAssertTrue(applied.contains("ipcacheChanges=0 ") && applied.contains("routesChanged=0 "), "nothing else rewritten: \(applied)")
        }
    }
}
