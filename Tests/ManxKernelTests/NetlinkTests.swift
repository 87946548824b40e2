import Foundation
import ManxNetlink
import XCTest

/// The rtnetlink layer on the real kernel, checked against what iproute2
/// reads back.
final class NetlinkTests: XCTestCase {
    func testVethAddressesAndRoutesAcrossNamespaces() throws {
        try requireKernel()
        let prefix = testPrefix("nl")
        let host = "\(prefix)h"
        let netns = "/var/run/netns/\(prefix)"
        try sh("ip", "netns", "add", prefix)
        defer {
            _ = try? sh("ip", "link", "del", host, allowFailure: true)
            _ = try? sh("ip", "netns", "del", prefix, allowFailure: true)
        }

        let node = try RouteSocket()
        try node.createVeth(name: host, peer: "eth0", peerNamespace: netns, mtu: 1400)
        XCTAssertThrowsError(try node.createVeth(name: host, peer: "eth0", peerNamespace: netns, mtu: 1400)) { error in
            XCTAssertEqual((error as? NetlinkError)?.code, EEXIST)
            XCTAssertTrue("\(error)".hasPrefix("creating the veth \(host) with peer eth0 in \(netns): "), "\(error)")
        }
        let link = try XCTUnwrap(try node.link(named: host))
        XCTAssertEqual(link.index, Int32(if_nametoindex(host)))
        XCTAssertEqual(link.mtu, 1400)
        XCTAssertFalse(link.up)
        XCTAssertEqual(link.mac.split(separator: ":").count, 6)
        try node.setAlias(link, "container-1")
        XCTAssertEqual(try node.link(named: host)?.alias, "container-1")
        XCTAssertNil(try node.link(named: "\(prefix)x"))

        // The pod's side, on a socket opened in its namespace; this thread
        // is back in the node's afterwards.
        let pod = try RouteSocket(namespace: netns)
        XCTAssertNotEqual(if_nametoindex(host), 0, "the thread returned to the node's namespace")
        let eth0 = try XCTUnwrap(try pod.link(named: "eth0"))
        XCTAssertEqual(eth0.mtu, 1400)
        try pod.addAddress("10.99.0.5", prefix: 32, to: eth0)
        try pod.setUp(eth0)
        try pod.addRoute("169.254.1.1", prefix: 32, dev: eth0)
        try pod.addRoute("0.0.0.0", prefix: 0, gateway: "169.254.1.1", dev: eth0)
        XCTAssertThrowsError(try pod.addRoute("0.0.0.0", prefix: 0, gateway: "169.254.1.1", dev: eth0)) { error in
            XCTAssertEqual((error as? NetlinkError)?.code, EEXIST)
        }
        XCTAssertEqual(try pod.addresses(of: eth0), ["10.99.0.5/32"])
        let routes = try pod.routes()
        XCTAssertTrue(routes.contains { $0.prefix == 0 && $0.gateway == "169.254.1.1" && $0.interface == eth0.index }, "\(routes)")
        XCTAssertTrue(routes.contains { $0.destination == "169.254.1.1" && $0.prefix == 32 && $0.gateway == nil && $0.interface == eth0.index },
                      "\(routes)")
        let shown = try sh("ip", "-n", prefix, "route", "show")
        XCTAssertTrue(shown.contains("default via 169.254.1.1 dev eth0"), shown)
        XCTAssertTrue(shown.contains("169.254.1.1 dev eth0 scope link"), shown)
        XCTAssertTrue(try sh("ip", "-n", prefix, "addr", "show", "dev", "eth0").contains("inet 10.99.0.5/32"))

        // The node's side: up, and a route that a retry replaces.
        try node.setUp(link)
        try node.addRoute("10.99.0.5", prefix: 32, dev: link, replace: true)
        try node.addRoute("10.99.0.5", prefix: 32, dev: link, replace: true)
        XCTAssertEqual(try node.link(named: host)?.up, true)
        XCTAssertTrue(try sh("ip", "route", "show", "10.99.0.5/32").contains("dev \(host) scope link"))

        XCTAssertTrue(try node.deleteLink(named: host))
        XCTAssertFalse(try node.deleteLink(named: host))
        XCTAssertNil(try pod.link(named: "eth0"), "the peer goes with the host side")

        XCTAssertThrowsError(try RouteSocket(namespace: "\(netns)-missing")) { error in
            XCTAssertEqual("\(error)", "opening the network namespace \(netns)-missing: No such file or directory")
        }
        XCTAssertThrowsError(try pod.addAddress("10.99.0.256", prefix: 32, to: eth0)) { error in
            XCTAssertTrue("\(error)".contains("10.99.0.256 is not an IPv4 address"), "\(error)")
        }
    }
}
