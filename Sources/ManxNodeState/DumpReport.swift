import Foundation

/// `bpfctl dump`: every map of a node, with the daemon's names for the
/// numbers, as plain Codable values (printed as text or JSON).
public struct DumpReport: Codable, Sendable {
    public struct PolicyRow: Codable, Sendable {
        public var peer: String
        public var identity: UInt32?
        public var proto: String
        public var ports: String
        public var action: String
        public var ruleID: UInt32
        public var rule: String
        public var hits: UInt64

        public init(peer: String, identity: UInt32?, proto: String, ports: String, action: String, ruleID: UInt32, rule: String, hits: UInt64) {
            self.peer = peer
            self.identity = identity
            self.proto = proto
            self.ports = ports
            self.action = action
            self.ruleID = ruleID
            self.rule = rule
            self.hits = hits
        }
    }

    public struct EndpointView: Codable, Sendable {
        public var ifindex: UInt32
        public var interface: String
        public var workload: String
        public var ip: String
        public var identity: UInt32
        public var ingressRuleset: UInt32
        public var egressRuleset: UInt32
        public var counters: [String: [String: UInt64]]
        /// Entries in the endpoint's conntrack table, and its budget.
        public var conntrackEntries: Int
        public var conntrackBudget: Int
        public var ingressPolicy: [PolicyRow]
        public var egressPolicy: [PolicyRow]

        public init(ifindex: UInt32, interface: String, workload: String, ip: String, identity: UInt32, ingressRuleset: UInt32, egressRuleset: UInt32, counters: [String: [String: UInt64]], conntrackEntries: Int, conntrackBudget: Int, ingressPolicy: [PolicyRow], egressPolicy: [PolicyRow]) {
            self.ifindex = ifindex
            self.interface = interface
            self.workload = workload
            self.ip = ip
            self.identity = identity
            self.ingressRuleset = ingressRuleset
            self.egressRuleset = egressRuleset
            self.counters = counters
            self.conntrackEntries = conntrackEntries
            self.conntrackBudget = conntrackBudget
            self.ingressPolicy = ingressPolicy
            self.egressPolicy = egressPolicy
        }
    }

    public struct ConntrackRow: Codable, Sendable {
        /// The endpoint whose table holds the entry, and how the flow met
        /// it: "egress" when it opened the flow, "ingress" when it received it.
        public var endpoint: String
        public var direction: String
        public var proto: String
        public var source: String
        public var destination: String
        public var ageSeconds: Double
        public var idleSeconds: Double
        public var state: String
        public var packets: UInt64
        public var bytes: UInt64
        public var ruleset: UInt32
        public var approvedBy: String

        public init(endpoint: String, direction: String, proto: String, source: String, destination: String, ageSeconds: Double, idleSeconds: Double, state: String, packets: UInt64, bytes: UInt64, ruleset: UInt32, approvedBy: String) {
            self.endpoint = endpoint
            self.direction = direction
            self.proto = proto
            self.source = source
            self.destination = destination
            self.ageSeconds = ageSeconds
            self.idleSeconds = idleSeconds
            self.state = state
            self.packets = packets
            self.bytes = bytes
            self.ruleset = ruleset
            self.approvedBy = approvedBy
        }
    }

    public struct IPCacheRow: Codable, Sendable {
        public var cidr: String
        public var identity: UInt32
        public var members: [String]

        public init(cidr: String, identity: UInt32, members: [String]) {
            self.cidr = cidr
            self.identity = identity
            self.members = members
        }
    }

    public struct RouteRow: Codable, Sendable {
        public var cidr: String
        public var nextHop: String?
        public var encapsulation: String

        public init(cidr: String, nextHop: String?, encapsulation: String) {
            self.cidr = cidr
            self.nextHop = nextHop
            self.encapsulation = encapsulation
        }
    }

    public struct NodeView: Codable, Sendable {
        public var address: String
        public var underlay: String
        public var underlayMTU: UInt32
        public var podMTU: Int?
        public var vxlan: String

        public init(address: String, underlay: String, underlayMTU: UInt32, podMTU: Int?, vxlan: String) {
            self.address = address
            self.underlay = underlay
            self.underlayMTU = underlayMTU
            self.podMTU = podMTU
            self.vxlan = vxlan
        }
    }

    public var node: String
    public var generation: Int
    public var lastError: String?
    public var endpoints: [EndpointView] = []
    public var ipcache: [IPCacheRow] = []
    public var conntrack: [ConntrackRow] = []
    public var rulesets: Int = 0
    public var policyEntries: Int = 0
    /// Routing between nodes (absent on a node without a Node resource).
    public var routing: NodeView?
    public var routes: [RouteRow] = []
    public var nodeStatistics: [String: UInt64] = [:]

    /// By enum manx_counter (LayoutTests checks the count).
    public static let counterNames: [String] = [
        "allow_new", "allow_conntrack", "allow_arp", "allow_node", "allow_related", "allow_fragment", "drop_policy", "drop_default",
        "drop_malformed", "drop_ipv6", "drop_fragment", "drop_no_endpoint",
        "drop_spoofed_source", "drop_wrong_destination", "drop_vlan", "drop_non_ip", "drop_tunnel",
        "drop_conntrack_full", "drop_icmp_unrelated", "drop_fragment_tiny", "drop_fragment_overlap",
        "event_rate_limited", "event_ring_full", "bytes",
    ]

    public init(node: String, generation: Int, lastError: String?) {
        (self.node, self.generation, self.lastError) = (node, generation, lastError)
    }
}
