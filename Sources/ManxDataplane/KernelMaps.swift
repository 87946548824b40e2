import ManxBPF
import ManxMapLayout
import ManxNodeState

/// The workload maps of one node, typed by their shared C layouts.
public struct KernelMaps: Sendable {
    public let endpoints: BPFMap
    public let ipcache: BPFMap
    public let policy: BPFMap
    public let conntrack: BPFMap
    /// Which endpoints' conntrack tables may hold entries (by endpoint id).
    public let conntrackLive: BPFMap
    /// Every peer address some conntrack table may hold, and how many the
    /// programs could not add (manx_ct_peers in maps.h).
    public let conntrackPeers: BPFMap
    public let conntrackPeersMissed: BPFMap
    public let counters: BPFMap
    public let ruleHits: BPFMap
    public let events: BPFMap
    public let endpointPolicy: BPFMap
    public let generation: BPFMap
    public let allocations: BPFMap

    init(_ open: (String) throws(BPFError) -> BPFMap) throws(BPFError) {
        endpoints = try open(MANX_MAP_ENDPOINTS)
        ipcache = try open(MANX_MAP_IPCACHE)
        policy = try open(MANX_MAP_POLICY)
        conntrack = try open(MANX_MAP_CONNTRACK)
        conntrackLive = try open(MANX_MAP_CT_LIVE)
        conntrackPeers = try open(MANX_MAP_CT_PEERS)
        conntrackPeersMissed = try open(MANX_MAP_CT_PEERS_MISSED)
        counters = try open(MANX_MAP_COUNTERS)
        ruleHits = try open(MANX_MAP_RULE_HITS)
        events = try open(MANX_MAP_EVENTS)
        endpointPolicy = try open(MANX_MAP_EP_POLICY)
        generation = try open(MANX_MAP_GENERATION)
        allocations = try open(MANX_MAP_ALLOC)
    }

    /// The maps of a running node, from their pins (what `bpfctl` uses).
    public static func openPinned(_ paths: NodePaths) throws(BPFError) -> KernelMaps {
        try KernelMaps { (name: String) throws(BPFError) in try BPFMap.openPinned("\(paths.pinRoot)/\(name)") }
    }

    static func fromObject(_ object: BPFObject) throws(BPFError) -> KernelMaps {
        try KernelMaps { (name: String) throws(BPFError) in try object.map(named: name) }
    }
}
