import Foundation
import ManxBPF
import ManxBPFObjects
import ManxMapLayout
import ManxModel
import ManxRouting

/// Routing between nodes in BPF: the routes map, the node configuration
/// the programs read, and the decapsulating program on the underlay.
///
/// Routes are changed in place, one map update per prefix (additions and
/// changes first, removals last), so a packet always finds either the old
/// or the new next hop, never none.
public final class NodeRouting {
    public let routes: BPFMap
    public let config: BPFMap
    public let stats: BPFMap
    public let fromUnderlay: BPFProgram
    private let object: BPFObject
    private(set) var programmed: [CIDR: manx_route_value] = [:]
    private var attachedUnderlay: Int32?

    /// Loads the node program; its maps are the pinned maps the workload
    /// programs use, so load `Dataplane` first.
    public init(paths: NodePaths) throws(BPFError) {
        object = try BPFObject(elf: BPFObjects.elf(.node), name: "manx_node", pinRoot: paths.pinRoot)
        try object.load()
        routes = try object.map(named: MANX_MAP_ROUTES)
        config = try object.map(named: MANX_MAP_NODE_CONFIG)
        stats = try object.map(named: MANX_MAP_NODE_STATS)
        fromUnderlay = try object.program(named: "manx_from_underlay")
        for (key, value) in try routes.entries(as: (manx_route_key, manx_route_value).self) {
            programmed[key.cidr] = value
        }
    }

    public struct Report: Sendable {
        public var underlay: Underlay?
        public var podMTU: Int?
        public var routesChanged = 0
        public var routesRemoved = 0
    }

    /// Puts the plan in force. Without a Node resource for this node the
    /// plan is empty: routes are removed and nothing is attached.
    public func apply(_ plan: RoutingPlan, vxlanDevice: String? = nil) throws -> Report {
        var report = Report()
        var wanted: [CIDR: manx_route_value] = [:]
        var cfg = manx_node_config()
        if let node = plan.node {
            let underlay = try Underlay.holding(node.address)
            report.underlay = underlay
            report.podMTU = plan.podMTU(underlayMTU: underlay.mtu)
            cfg.address = node.address.networkOrder
            cfg.underlay_ifindex = UInt32(underlay.ifindex)
            cfg.underlay_mtu = UInt32(underlay.mtu)
            cfg.vxlan_vni = Self.vxlanVNI
            if let vxlanDevice {
                try Self.ensureVXLANDevice(vxlanDevice, address: node.address, mtu: underlay.mtu)
                cfg.vxlan_ifindex = UInt32(try NetworkInterface.index(named: vxlanDevice))
            }
            for r in plan.routes {
                var v = manx_route_value()
                if let hop = r.nextHop {
                    v.next_hop = hop.networkOrder
                    v.flags = UInt32(MANX_ROUTE_F_REMOTE)
                    switch r.encapsulation {
                    case .none: break
                    case .ipip: v.flags |= UInt32(MANX_ROUTE_F_IPIP)
                    case .vxlan: v.flags |= UInt32(MANX_ROUTE_F_VXLAN)
                    }
                }
                wanted[r.cidr] = v
            }
        }
        try config.update(UInt32(0), cfg)
        for (cidr, value) in wanted.sorted(by: { $0.key < $1.key }) where programmed[cidr] != value {
            try routes.update(manx_route_key(cidr), value)
            programmed[cidr] = value
            report.routesChanged += 1
        }
        for cidr in programmed.keys.sorted() where wanted[cidr] == nil {
            try routes.delete(manx_route_key(cidr))
            programmed[cidr] = nil
            report.routesRemoved += 1
        }
        if let underlay = report.underlay, attachedUnderlay != underlay.ifindex {
            if try TC.attachedProgramID(ifindex: underlay.ifindex, hook: .ingress) != fromUnderlay.id {
                try TC.attach(fromUnderlay, ifindex: underlay.ifindex, hook: .ingress)
            }
            attachedUnderlay = underlay.ifindex
        }
        return report
    }

    /// A collect_md VXLAN device whose MAC derives from the node address
    /// (0e:4d:a.b.c.d): senders address inner frames to it (see encap.h).
    static func ensureVXLANDevice(_ name: String, address: IPv4Address, mtu: Int) throws {
        if (try? NetworkInterface.index(named: name)) != nil { return }
        let octets = [address.value >> 24, address.value >> 16, address.value >> 8, address.value].map { $0 & 0xff }
        let mac = (["0e", "4d"] + octets.map { String(format: "%02x", $0) }).joined(separator: ":")
        for args in [["link", "add", name, "mtu", String(mtu), "address", mac, "type", "vxlan", "external", "dstport", "4789"],
                     ["link", "set", name, "up"]] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["ip"] + args
            try p.run()
            p.waitUntilExit()
            if p.terminationStatus != 0 { throw BPFError("ip \(args.joined(separator: " "))", errno: EINVAL, "cannot create VXLAN device") }
        }
    }

    /// Calico's VNI for pod traffic.
    public static let vxlanVNI: UInt32 = 4096

    /// Node counters, summed over CPUs, by name.
    public func statistics() throws(BPFError) -> [(String, UInt64)] {
        var out: [(String, UInt64)] = []
        for (index, name) in NodeRouting.statNames.enumerated() {
            let perCPU = try stats.lookupPerCPU(UInt32(index), as: UInt64.self) ?? []
            out.append((name, perCPU.reduce(0, +)))
        }
        return out
    }

    /// In the order of enum manx_node_stat.
    public static let statNames = [
        "routed", "encap_ipip", "encap_vxlan", "decap_ipip", "decap_vxlan", "decap_rejected",
        "frag_needed_sent", "too_big_dropped", "forward_error",
    ]

    public func detach() {
        if let ifindex = attachedUnderlay { _ = try? TC.detach(ifindex: ifindex, hook: .ingress) }
        attachedUnderlay = nil
    }
}

extension manx_route_key {
    init(_ cidr: CIDR) {
        self.init()
        prefixlen = UInt32(cidr.prefixLength)
        addr = cidr.address.networkOrder
    }

    var cidr: CIDR { CIDR(IPv4Address(UInt32(bigEndian: addr)), Int(prefixlen)) }
}

extension manx_route_value: @retroactive Equatable {
    public static func == (a: manx_route_value, b: manx_route_value) -> Bool {
        a.next_hop == b.next_hop && a.flags == b.flags
    }
}

/// The interface that carries a node's underlay address, in the current
/// network namespace (read with `ip -j`: /sys may belong to another one).
public struct Underlay: Sendable, Equatable {
    public var name: String
    public var ifindex: Int32
    public var mtu: Int

    public struct NotFound: Error, CustomStringConvertible {
        public let address: IPv4Address
        public var description: String { "no interface in this network namespace has the node address \(address)" }
    }

    public static func holding(_ address: IPv4Address) throws -> Underlay {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ip", "-j", "-4", "addr", "show"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let links = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]] ?? []
        for link in links {
            let addrs = link["addr_info"] as? [[String: Any]] ?? []
            guard addrs.contains(where: { ($0["local"] as? String) == address.description }),
                  let name = link["ifname"] as? String, let index = link["ifindex"] as? Int, let mtu = link["mtu"] as? Int
            else { continue }
            return Underlay(name: name, ifindex: Int32(index), mtu: mtu)
        }
        throw NotFound(address: address)
    }
}
