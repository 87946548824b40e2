import ManxModel

/// How one node forwards pod traffic to the others, computed from the
/// pools, nodes and IPAM blocks in the datastore.
///
/// Every block claimed by another node becomes a route to that node, with
/// the pool's encapsulation (CrossSubnet: none towards nodes on the same
/// subnet). An address used on a node other than its block's owner (a
/// fixed address from another node's block) gets a /32 route of its own;
/// on this node it gets a local /32 that hides the block's remote route.
public struct RoutingPlan: Equatable, Sendable {
    public struct Route: Hashable, Sendable, Comparable {
        public var cidr: CIDR
        /// The hosting node, nil for addresses hosted here.
        public var node: String?
        public var nextHop: IPv4Address?
        public var encapsulation: Encapsulation

        public static func < (a: Route, b: Route) -> Bool { a.cidr < b.cidr }
    }

    /// This node, or nil when the datastore has no Node resource for it:
    /// then Manx does no routing (a single-node setup).
    public var node: ClusterNode?
    public var routes: [Route] = []
    /// Every pool: destinations inside them are never NATed.
    public var pools: [CIDR] = []
    /// Pools whose traffic to destinations outside every pool is SNATed to
    /// the node's address.
    public var natOutgoingPools: [CIDR] = []
    /// The encapsulations some route uses or some pool asks for.
    public var encapsulations: Set<Encapsulation> = []
    public var ipipMTU: Int?
    public var vxlanMTU: Int?

    public init() {}

    public init(nodeName: String, pools: [IPPool], nodes: [ClusterNode], blocks: [IPAMBlock],
                felix: [FelixConfiguration]) {
        let nodesByName = Dictionary(nodes.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        guard let me = nodesByName[nodeName] else { return }
        node = me
        let poolsByName = Dictionary(pools.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // A disabled pool hands out no new addresses, but its pods keep
        // their routes and NAT (as in Calico).
        self.pools = pools.map(\.cidr).sorted()
        natOutgoingPools = pools.filter(\.natOutgoing).map(\.cidr).sorted()
        for p in pools where p.encapsulation.0 != .none { encapsulations.insert(p.encapsulation.0) }

        // Felix: a node's own configuration overrides the default.
        for name in ["default", "node.\(nodeName)"] {
            guard let f = felix.first(where: { $0.name == name }) else { continue }
            ipipMTU = f.ipipMTU ?? ipipMTU
            vxlanMTU = f.vxlanMTU ?? vxlanMTU
        }

        func encapsulation(pool: IPPool?, towards peer: ClusterNode) -> Encapsulation {
            guard let pool else { return .none }
            let (kind, mode) = pool.encapsulation
            switch mode {
            case .never: return .none
            case .always: return kind
            case .crossSubnet: return me.subnet.contains(peer.address) ? .none : kind
            }
        }
        func pool(of block: IPAMBlock) -> IPPool? {
            poolsByName[block.pool].flatMap { $0.cidr.contains(block.cidr) ? $0 : nil }
                ?? pools.first { $0.cidr.contains(block.cidr) }
        }
        var wanted: [CIDR: Route] = [:]
        for block in blocks {
            let blockPool = pool(of: block)
            if block.node != nodeName, let owner = nodesByName[block.node] {
                wanted[block.cidr] = Route(cidr: block.cidr, node: owner.name, nextHop: owner.address,
                                           encapsulation: encapsulation(pool: blockPool, towards: owner))
            }
            for a in block.allocations where a.node != block.node {
                let host = CIDR(a.address, 32)
                if a.node == nodeName {
                    wanted[host] = Route(cidr: host, node: nil, nextHop: nil, encapsulation: .none)
                } else if let peer = nodesByName[a.node] {
                    wanted[host] = Route(cidr: host, node: peer.name, nextHop: peer.address,
                                         encapsulation: encapsulation(pool: blockPool, towards: peer))
                }
            }
        }
        routes = wanted.values.sorted()
        for r in routes where r.encapsulation != .none { encapsulations.insert(r.encapsulation) }
    }

    /// The MTU pods on this node get: the underlay's, less the largest
    /// encapsulation in use, unless FelixConfiguration sets it.
    public func podMTU(underlayMTU: Int) -> Int {
        var mtu = underlayMTU
        if encapsulations.contains(.ipip) { mtu = min(mtu, ipipMTU ?? underlayMTU - Encapsulation.ipip.overhead) }
        if encapsulations.contains(.vxlan) { mtu = min(mtu, vxlanMTU ?? underlayMTU - Encapsulation.vxlan.overhead) }
        return mtu
    }
}
