import Foundation
import ManxBPF
import ManxBPFObjects
import ManxCommand
import ManxMapLayout
import ManxModel
import ManxNodeState
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
        public var routesChanged = 0
        public var routesRemoved = 0
    }

    /// A plan resolved against this namespace's interfaces: everything
    /// `apply` will write, found before anything changes, so that a batch
    /// that cannot be routed (no interface holds the node address) is
    /// rejected whole.
    public struct Prepared: Sendable {
        public let underlay: Underlay?
        public let podMTU: Int?
        let config: manx_node_config
        let routes: [CIDR: manx_route_value]
    }

    /// Resolves the plan. Without a Node resource for this node the plan is
    /// empty: applying it removes every route and attaches nothing. With
    /// `vxlanDevice`, that device is created here if missing.
    public func prepare(_ plan: RoutingPlan, vxlanDevice: String? = nil) throws -> Prepared {
        guard let node = plan.node else { return Prepared(underlay: nil, podMTU: nil, config: manx_node_config(), routes: [:]) }
        let underlay = try Underlay.holding(node.address)
        var cfg = manx_node_config()
        cfg.address = node.address.networkOrder
        cfg.underlay_ifindex = UInt32(underlay.ifindex)
        cfg.underlay_mtu = UInt32(underlay.mtu)
        cfg.vxlan_vni = Self.vxlanVNI
        if let vxlanDevice {
            try Self.ensureVXLANDevice(vxlanDevice, address: node.address, mtu: underlay.mtu)
            cfg.vxlan_ifindex = UInt32(try NetworkInterface.index(named: vxlanDevice))
        }
        var wanted: [CIDR: manx_route_value] = [:]
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
        return Prepared(underlay: underlay, podMTU: plan.podMTU(underlayMTU: underlay.mtu), config: cfg, routes: wanted)
    }

    /// Puts a prepared plan in force: node configuration, route changes
    /// (removals last), and the decapsulating program on the underlay.
    public func apply(_ prepared: Prepared) throws(BPFError) -> Report {
        var report = Report()
        try config.update(UInt32(0), prepared.config)
        for (cidr, value) in prepared.routes.sorted(by: { $0.key < $1.key }) where programmed[cidr] != value {
            try routes.update(manx_route_key(cidr), value)
            programmed[cidr] = value
            report.routesChanged += 1
        }
        for cidr in programmed.keys.sorted() where prepared.routes[cidr] == nil {
            try routes.delete(manx_route_key(cidr))
            programmed[cidr] = nil
            report.routesRemoved += 1
        }
        if let underlay = prepared.underlay, attachedUnderlay != underlay.ifindex {
            if let previous = attachedUnderlay { try TC.detach(ifindex: previous, hook: .ingress) }
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
        try Command.checked(["ip", "link", "add", name, "mtu", String(mtu), "address", mac, "type", "vxlan", "external", "dstport", "4789"])
        try Command.checked(["ip", "link", "set", name, "up"])
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

    /// Detaches the underlay program and removes a VXLAN device made by
    /// `prepare`. Works from a fresh process too (`manxd --uninstall`):
    /// the interfaces are read back from the pinned node configuration.
    public func detach() {
        let cfg = (try? config.lookup(UInt32(0), as: manx_node_config.self)) ?? nil
        if let ifindex = attachedUnderlay ?? cfg.map({ Int32($0.underlay_ifindex) }), ifindex != 0 {
            _ = try? TC.detach(ifindex: ifindex, hook: .ingress)
        }
        if let vxlan = cfg?.vxlan_ifindex, vxlan != 0, let name = NetworkInterface.name(index: Int32(vxlan)) {
            _ = try? Command.checked(["ip", "link", "del", name])
        }
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
/// network namespace (read on every pass, without starting a process).
public struct Underlay: Sendable, Equatable {
    public var name: String
    public var ifindex: Int32
    public var mtu: Int

    public struct NotFound: Error, CustomStringConvertible {
        public let address: IPv4Address
        public var description: String { "no interface in this network namespace has the node address \(address)" }
    }

    public static func holding(_ address: IPv4Address) throws -> Underlay {
        guard let link = NetworkInterface.holding(addressNetworkOrder: address.networkOrder) else { throw NotFound(address: address) }
        return Underlay(name: link.name, ifindex: link.index, mtu: link.mtu)
    }
}
