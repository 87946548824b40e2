import Foundation
import ManxCommand
import ManxModel

/// A pod's veth pair, Calico style: the pod side holds the address as a /32
/// with a default route via a link-local gateway; the host side answers ARP
/// for the gateway by proxy ARP and carries a /32 route to the pod.
///
/// Everything runs with iproute2: host-side commands in the plugin's own
/// network namespace (the node's), pod-side ones through
/// `nsenter --net=<netns path>`.
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

/// One interface as `ip -j addr show` reports it.
struct LinkInfo: Sendable {
    var name: String
    var ifindex: Int32
    var mac: String
    var mtu: Int
    var alias: String?
    var up: Bool
    var ipv4: [String]
}

/// The iproute2 operations of ADD, DEL and CHECK.
enum Links {
    /// The interface in the current network namespace (netns nil) or in
    /// the namespace at the path; nil if there is no such interface. With
    /// `addresses` its IPv4 addresses, else its alias (`ip addr` shows no
    /// alias, `ip link` no addresses).
    static func show(_ name: String, netns: String? = nil, addresses: Bool = false) throws(CNIError) -> LinkInfo? {
        let out = try ip(["-j", addresses ? "addr" : "link", "show", "dev", name], netns: netns)
        if !out.succeeded {
            if out.stderr.contains("does not exist") { return nil }
            throw CNIError(.interfaceSetup, "cannot read interface \(name)\(where_(netns)): \(out.message)")
        }
        return try parse(out.stdout, name: name, netns: netns, addresses: addresses)
    }

    /// The interface in `ip -j link|addr show dev NAME` output (the last
    /// line of a batch whose other commands print nothing).
    static func parse(_ json: String, name: String, netns: String?, addresses: Bool) throws(CNIError) -> LinkInfo {
        guard case .success(let value) = JSONValue.parse(json), let first = value.arrayValue?.first?.objectValue else {
            throw CNIError(.interfaceSetup, "cannot parse `ip -j \(addresses ? "addr" : "link") show dev \(name)`\(where_(netns)): \(json)")
        }
        let mtu: Int
        if case .int(let m)? = first["mtu"] { mtu = Int(m) } else { mtu = 0 }
        var flags: [String] = []
        for f in first["flags"]?.arrayValue ?? [] { if let s = f.stringValue { flags.append(s) } }
        var ipv4: [String] = []
        for entry in first["addr_info"]?.arrayValue ?? [] {
            guard entry["family"]?.stringValue == "inet", let local = entry["local"]?.stringValue else { continue }
            if case .int(let len)? = entry["prefixlen"] { ipv4.append("\(local)/\(len)") }
        }
        var ifindex: Int32 = 0
        if case .int(let i)? = first["ifindex"] { ifindex = Int32(i) }
        return LinkInfo(name: name, ifindex: ifindex, mac: first["address"]?.stringValue ?? "", mtu: mtu, alias: first["ifalias"]?.stringValue,
                        up: flags.contains("UP"), ipv4: ipv4)
    }

    /// Deletes the interface if it exists (its veth peer goes with it).
    static func delete(_ name: String) throws(CNIError) {
        if if_nametoindex(name) == 0 { return } // the usual case: no process started
        let out = try ip(["link", "del", "dev", name])
        if !out.succeeded && !out.stderr.contains("Cannot find device") && !out.stderr.contains("does not exist") {
            throw CNIError(.interfaceSetup, "cannot delete interface \(name): \(out.message)")
        }
    }

    /// Creates the veth pair with the pod side directly in the pod's
    /// namespace under its final name, and configures both sides. The
    /// host side's alias records the container id, so DEL only ever
    /// removes the interface of its own container. The host side stays
    /// down, so no packet passes, until `activate` once manxd has the
    /// endpoint's programs and policy in place.
    static func create(host: String, ifname: String, netns: String, address: IPv4Address, mtu: Int,
                       containerID: String) throws(CNIError) -> (host: LinkInfo, pod: LinkInfo) {
        // Each batch ends by showing the interface: one process per side.
        let hostJSON = try batch([
            "link add \(host) mtu \(mtu) type veth peer name \(ifname) mtu \(mtu) netns \(netns)",
            "link set dev \(host) alias \(containerID)",
            "link show dev \(host)",
        ], netns: nil, hint: "creating the veth \(host) with peer \(ifname) in \(netns)")
        // proxy ARP answers the pods' ARP for the gateway at once.
        // /proc/sys/net belongs to the caller's network namespace: the node's.
        try sysctl("/proc/sys/net/ipv4/conf/\(host)/proxy_arp", "1")
        try sysctl("/proc/sys/net/ipv4/neigh/\(host)/proxy_delay", "0")
        let podJSON = try batch([
            "addr add \(address)/32 dev \(ifname)",
            "link set dev \(ifname) up",
            "link set dev lo up",
            "route add \(PodInterface.gateway) dev \(ifname) scope link",
            "route add default via \(PodInterface.gateway) dev \(ifname)",
            "addr show dev \(ifname)",
        ], netns: netns, hint: "configuring \(ifname) in \(netns)")
        return (try parse(hostJSON, name: host, netns: nil, addresses: false), try parse(podJSON, name: ifname, netns: netns, addresses: true))
    }

    /// Brings the host side up and routes the pod's address to it.
    static func activate(host: String, address: IPv4Address) throws(CNIError) {
        try batch(["link set dev \(host) up", "route replace \(address)/32 dev \(host)"], netns: nil,
                  hint: "bringing \(host) up and routing \(address) to it")
    }

    /// The pod namespace's IPv4 routes as "dst via gateway dev" strings.
    static func routes(netns: String) throws(CNIError) -> [(dst: String, gateway: String?, dev: String?)] {
        let out = try ip(["-j", "-4", "route", "show"], netns: netns)
        guard out.succeeded, case .success(let value) = JSONValue.parse(out.stdout), let list = value.arrayValue else {
            throw CNIError(.interfaceSetup, "cannot read the routes of \(netns): \(out.message)")
        }
        return list.compactMap { r in
            guard let dst = r["dst"]?.stringValue else { return nil }
            return (dst, r["gateway"]?.stringValue, r["dev"]?.stringValue)
        }
    }

    static func sysctl(_ path: String, _ value: String) throws(CNIError) {
        do {
            try Data((value + "\n").utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw CNIError(.interfaceSetup, "cannot write \(value) to \(path): \(error.localizedDescription)")
        }
    }

    /// `ip -j -batch -`: stops at the first failing line, which the error
    /// names; returns what the lines printed (JSON of a `show`).
    @discardableResult
    static func batch(_ lines: [String], netns: String?, hint: String) throws(CNIError) -> String {
        let out = try ip(["-j", "-batch", "-"], netns: netns, input: lines.joined(separator: "\n") + "\n")
        guard !out.succeeded else { return out.stdout }
        var message = out.stderr.split(separator: "\n").filter { !$0.hasPrefix("Command failed") }.joined(separator: "; ")
        if message.isEmpty { message = out.message }
        var failed = ""
        if let range = out.stderr.range(of: #"Command failed -:(\d+)"#, options: .regularExpression),
           let n = Int(out.stderr[range].split(separator: ":").last ?? ""), (1...lines.count).contains(n) {
            failed = " (`ip \(lines[n - 1])`)"
        }
        throw CNIError(.interfaceSetup, "\(hint) failed\(failed): \(message)")
    }

    static func ip(_ args: [String], netns: String? = nil, input: String? = nil) throws(CNIError) -> Command.Output {
        let command = (netns.map { ["nsenter", "--net=\($0)"] } ?? []) + ["ip"] + args
        do {
            return try Command.run(command, input: input)
        } catch {
            throw CNIError(.interfaceSetup, error.description)
        }
    }

    private static func where_(_ netns: String?) -> String { netns.map { " in \($0)" } ?? "" }
}
