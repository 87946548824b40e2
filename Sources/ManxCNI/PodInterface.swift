import Foundation
import ManxModel
import ManxNetlink

/// A pod's veth pair, Calico style: the pod side holds the address as a /32
/// with a default route via a link-local gateway; the host side answers ARP
/// for the gateway by proxy ARP and carries a /32 route to the pod.
public enum PodInterface {
    /// The pods' default gateway. Nothing holds it: the host side of every
    /// veth answers ARP for it (proxy_arp), because the node routes it
    /// elsewhere (its default route).
    public static let gateway = "169.254.1.1"

    /// The host-side interface of a pod: "mx" and 13 hex digits of the
    /// FNV-1a 64 hash of "namespace/pod" (15 bytes, Linux's limit). Stable,
    /// so a retried ADD finds the interface of an earlier attempt.
    public static func hostName(namespace: String, pod: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(namespace)/\(pod)".utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
        let hex = String(h, radix: 16)
        return "mx" + (String(repeating: "0", count: 16 - hex.count) + hex).prefix(13)
    }
}

/// One interface: as rtnetlink reports it, with its IPv4 addresses when asked.
struct LinkInfo: Sendable {
    var link: Link
    var ipv4: [String] = []

    var name: String { link.name }
    var ifindex: Int32 { link.index }
    var mac: String { link.mac }
    var alias: String? { link.alias }
    var up: Bool { link.up }
}

/// The link, address and route operations of ADD, DEL and CHECK, as
/// rtnetlink requests: host-side ones on a socket in the plugin's own
/// network namespace (the node's), pod-side ones on a socket opened in the
/// pod's. (With iproute2 they took two `ip` processes, 9-10 ms.)
enum Links {
    /// The interface in the current network namespace (netns nil) or in
    /// the namespace at the path; nil if there is no such interface. With
    /// `addresses`, its IPv4 addresses.
    static func show(_ name: String, netns: String? = nil, addresses: Bool = false) throws(CNIError) -> LinkInfo? {
        try netlink(netns) { s throws(NetlinkError) in
            guard let link = try s.link(named: name) else { return nil }
            return LinkInfo(link: link, ipv4: addresses ? try s.addresses(of: link) : [])
        }
    }

    /// Deletes the interface if it exists (its veth peer goes with it).
    static func delete(_ name: String) throws(CNIError) {
        if if_nametoindex(name) == 0 { return } // the usual case: nothing to ask
        try netlink(nil) { s throws(NetlinkError) in _ = try s.deleteLink(named: name) }
    }

    /// Creates the veth pair with the pod side directly in the pod's
    /// namespace under its final name, and configures both sides. The
    /// host side's alias records the container id, so DEL only ever
    /// removes the interface of its own container. The host side stays
    /// down, so no packet passes, until `activate` once manxd has the
    /// endpoint's programs and policy in place.
    static func create(host: String, ifname: String, netns: String, address: IPv4Address, mtu: Int,
                       containerID: String) throws(CNIError) -> (host: LinkInfo, pod: LinkInfo) {
        let hostLink = try netlink(nil) { s throws(NetlinkError) in
            try s.createVeth(name: host, peer: ifname, peerNamespace: netns, mtu: mtu)
            guard let link = try s.link(named: host) else { throw NetlinkError(ENODEV, "reading interface \(host) once created") }
            try s.setAlias(link, containerID)
            return LinkInfo(link: link)
        }
        // proxy ARP answers the pods' ARP for the gateway at once.
        // /proc/sys/net belongs to the caller's network namespace: the node's.
        try sysctl("/proc/sys/net/ipv4/conf/\(host)/proxy_arp", "1")
        try sysctl("/proc/sys/net/ipv4/neigh/\(host)/proxy_delay", "0")
        let podLink = try netlink(netns) { s throws(NetlinkError) in
            guard var link = try s.link(named: ifname), let lo = try s.link(named: "lo") else {
                throw NetlinkError(ENODEV, "reading \(ifname) and lo in \(netns)")
            }
            try s.addAddress(address.description, prefix: 32, to: link)
            try s.setUp(link)
            try s.setUp(lo)
            try s.addRoute(PodInterface.gateway, prefix: 32, dev: link)
            try s.addRoute("0.0.0.0", prefix: 0, gateway: PodInterface.gateway, dev: link)
            link.up = true
            return LinkInfo(link: link, ipv4: ["\(address)/32"])
        }
        return (hostLink, podLink)
    }

    /// Brings the host side up and routes the pod's address to it.
    static func activate(host: LinkInfo, address: IPv4Address) throws(CNIError) {
        try netlink(nil) { s throws(NetlinkError) in
            try s.setUp(host.link)
            try s.addRoute(address.description, prefix: 32, dev: host.link, replace: true)
        }
    }

    /// The pod namespace's IPv4 routes of the main table.
    static func routes(netns: String) throws(CNIError) -> [Route] {
        try netlink(netns) { s throws(NetlinkError) in try s.routes() }
    }

    static func sysctl(_ path: String, _ value: String) throws(CNIError) {
        do {
            try Data((value + "\n").utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw CNIError(.interfaceSetup, "cannot write \(value) to \(path): \(error.localizedDescription)")
        }
    }

    /// Runs requests on a socket in the namespace at `netns` (nil: the
    /// plugin's own); a refusal is an interface error naming what was asked.
    private static func netlink<T>(_ netns: String?, _ body: (RouteSocket) throws(NetlinkError) -> T) throws(CNIError) -> T {
        do {
            return try body(try RouteSocket(namespace: netns))
        } catch {
            throw CNIError(.interfaceSetup, "\(netns.map { "in \($0): " } ?? "")\(error)")
        }
    }
}
