import Foundation
import ManxBPF
import ManxCompiler
import ManxMapLayout
import ManxModel
import ManxNodeState

extension DumpReport {
    public static var nodeStatNames: [String] { NodeRouting.statNames }

    public static func read(_ paths: NodePaths) throws -> DumpReport {
        let maps = try KernelMaps.openPinned(paths)
        let meta = (try? NodeMetadata.read(paths)) ?? NodeMetadata()
        var report = DumpReport(node: paths.pinRoot, generation: meta.generation, lastError: meta.error)

        let hits = Dictionary(try maps.ruleHits.perCPUEntries(as: (UInt32, [manx_rule_hits]).self).map { key, values in
            (key, values.reduce(0) { $0 + $1.packets })
        }, uniquingKeysWith: +)
        func members(_ id: UInt32) -> String {
            if id == ReservedIdentity.world { return "world" }
            let list = meta.identities[id]?.members ?? []
            return list.isEmpty ? "identity \(id)" : list.joined(separator: ", ")
        }
        func ruleText(_ id: UInt32) -> String {
            if id == ReservedRule.none { return "no policy" }
            if id == ReservedRule.defaultDeny { return "fail closed: rule set missing" }
            if id == ReservedRule.node { return "node rule: opened by this node" }
            guard let r = meta.rules[id] else { return "rule \(id)" }
            let index = r.index.map { " rule \($0)" } ?? ""
            return "\(r.policy)\(index) [\(r.direction)]: \(r.summary)"
        }

        var byRuleset: [UInt32: [(manx_policy_key, manx_policy_value)]] = [:]
        for (key, value) in try maps.policy.entries(as: (manx_policy_key, manx_policy_value).self) {
            byRuleset[key.rulesetID, default: []].append((key, value))
        }
        report.rulesets = byRuleset.count
        report.policyEntries = byRuleset.values.reduce(0) { $0 + $1.count }
        func rows(_ ruleset: UInt32) -> [PolicyRow] {
            if ruleset == 0 { return [PolicyRow(peer: "any", identity: nil, proto: "any", ports: "any", action: "Allow",
                                                ruleID: 0, rule: "not isolated: no policy selects this endpoint", hits: 0)] }
            let entries = (byRuleset[ruleset] ?? []).sorted { $0.0.prefixlen < $1.0.prefixlen ||
                ($0.0.prefixlen == $1.0.prefixlen && ($0.0.entry.identity ?? 0, $0.0.entry.proto ?? 0, $0.0.entry.port) < ($1.0.entry.identity ?? 0, $1.0.entry.proto ?? 0, $1.0.entry.port)) }
            return entries.map { key, value in
                let e = key.entry
                let d = value.decision
                var ports = "any"
                if let _ = e.proto {
                    let span = UInt32(1) << UInt32(16 - e.portBits)
                    let lo = UInt32(e.port), hi = lo + span - 1
                    ports = e.portBits == 16 ? "\(lo)" : (e.portBits == 0 ? "any" : "\(lo)-\(hi)")
                    if e.proto == IPProtocol.icmp.number && e.portBits > 0 {
                        ports = e.portBits >= 16 ? "type \(lo >> 8) code \(lo & 0xff)" : "type \(lo >> 8)"
                    }
                }
                return PolicyRow(
                    peer: e.identity.map(members) ?? "any other peer", identity: e.identity,
                    proto: e.proto.map { IPProtocol($0).description } ?? "any", ports: ports,
                    action: (d.verdict == .allow ? "Allow" : "Deny") + (d.log ? "+Log" : ""),
                    ruleID: d.ruleID, rule: ruleText(d.ruleID), hits: hits[d.ruleID] ?? 0)
            }
        }

        let counters = Dictionary(try maps.counters.perCPUEntries(as: (manx_counters_key, [manx_counters]).self).map { key, values in
            let sums = values.reduce(into: [UInt64](repeating: 0, count: counterNames.count)) { acc, c in
                withUnsafeBytes(of: c.value) { raw in
                    for i in acc.indices { acc[i] += raw.load(fromByteOffset: i * 8, as: UInt64.self) }
                }
            }
            return ("\(key.ifindex)/\(key.direction)", sums)
        }, uniquingKeysWith: { a, _ in a })
        let byInterface = Dictionary(meta.endpoints.map { ($0.interface, $0) }, uniquingKeysWith: { a, _ in a })
        let now = monotonicNanoseconds()
        let generation = (try maps.generation.lookup(UInt32(0), as: manx_generation.self)?.active ?? 0) & 1
        for (ifindex, ep) in try maps.endpoints.entries(as: (UInt32, manx_endpoint).self).sorted(by: { $0.0 < $1.0 }) {
            let name = NetworkInterface.name(index: Int32(bitPattern: ifindex)) ?? ""
            let policy = try maps.endpointPolicy.lookup(Dataplane.slot(ep.id, generation), as: manx_ep_policy.self) ?? manx_ep_policy()
            let known = byInterface[name] ?? meta.endpoints.first { $0.identity == policy.identity && $0.ingressRuleset == policy.ingress_ruleset }
            let table = try maps.conntrack.inner(at: ep.id)
            let flows = try table?.entries(as: (manx_ct_key, manx_ct_value).self) ?? []
            let workload = known?.workload ?? "?"
            report.conntrack += flows.map { conntrackRow($0.0, $0.1, endpoint: workload, now: now, rules: ruleText) }
            var counterView: [String: [String: UInt64]] = [:]
            for (dir, label) in [(MANX_DIR_INGRESS, "ingress"), (MANX_DIR_EGRESS, "egress")] {
                let sums = counters["\(ifindex)/\(dir.rawValue)"] ?? []
                counterView[label] = Dictionary(uniqueKeysWithValues: zip(counterNames, sums))
            }
            report.endpoints.append(EndpointView(
                ifindex: ifindex, interface: known?.interface ?? name, workload: workload,
                ip: IPv4Address(UInt32(bigEndian: ep.addr)).description, identity: policy.identity, ingressRuleset: policy.ingress_ruleset,
                egressRuleset: policy.egress_ruleset, counters: counterView,
                conntrackEntries: flows.count, conntrackBudget: table?.maxEntries ?? 0,
                ingressPolicy: rows(policy.ingress_ruleset), egressPolicy: rows(policy.egress_ruleset)))
        }

        let ipcache = try maps.ipcache.entries(as: (manx_ipcache_key, manx_ipcache_value).self).filter { $0.0.generationIndex == generation }
        for (key, value) in ipcache.sorted(by: { $0.0.cidr < $1.0.cidr }) {
            report.ipcache.append(IPCacheRow(cidr: key.cidr.description, identity: value.identity,
                                             members: meta.identities[value.identity]?.members ?? []))
        }

        report.conntrack.sort { ($0.endpoint, $0.source, $0.destination) < ($1.endpoint, $1.source, $1.destination) }
        try readRouting(paths, meta: meta, into: &report)
        return report
    }

    private static func readRouting(_ paths: NodePaths, meta: NodeMetadata, into report: inout DumpReport) throws {
        guard let config = try? BPFMap.openPinned("\(paths.pinRoot)/\(MANX_MAP_NODE_CONFIG)"),
              let routes = try? BPFMap.openPinned("\(paths.pinRoot)/\(MANX_MAP_ROUTES)"),
              let stats = try? BPFMap.openPinned("\(paths.pinRoot)/\(MANX_MAP_NODE_STATS)") else { return }
        for (index, name) in NodeRouting.statNames.enumerated() {
            report.nodeStatistics[name] = (try stats.lookupPerCPU(UInt32(index), as: UInt64.self) ?? []).reduce(0, +)
        }
        if let cfg = try config.lookup(UInt32(0), as: manx_node_config.self), cfg.address != 0 {
            report.routing = NodeView(
                address: IPv4Address(UInt32(bigEndian: cfg.address)).description,
                underlay: meta.underlay ?? NetworkInterface.name(index: Int32(cfg.underlay_ifindex)) ?? "ifindex \(cfg.underlay_ifindex)",
                underlayMTU: cfg.underlay_mtu, podMTU: meta.podMTU,
                vxlan: cfg.vxlan_ifindex == 0 ? "headers built in BPF" : "device ifindex \(cfg.vxlan_ifindex)")
        }
        for (key, v) in try routes.entries(as: (manx_route_key, manx_route_value).self).sorted(by: { $0.0.cidr < $1.0.cidr }) {
            let remote = v.flags & UInt32(MANX_ROUTE_F_REMOTE) != 0
            let encap = v.flags & UInt32(MANX_ROUTE_F_IPIP) != 0 ? "ipip" : v.flags & UInt32(MANX_ROUTE_F_VXLAN) != 0 ? "vxlan" : "none"
            report.routes.append(RouteRow(cidr: key.cidr.description,
                                          nextHop: remote ? IPv4Address(UInt32(bigEndian: v.next_hop)).description : nil,
                                          encapsulation: remote ? encap : "local"))
        }
    }

    static func conntrackRow(_ key: manx_ct_key, _ v: manx_ct_value, endpoint: String, now: UInt64,
                             rules: (UInt32) -> String) -> ConntrackRow {
        let a = "\(IPv4Address(UInt32(bigEndian: key.addr_a))):\(UInt16(bigEndian: key.port_a))"
        let b = "\(IPv4Address(UInt32(bigEndian: key.addr_b))):\(UInt16(bigEndian: key.port_b))"
        let origIsA = v.has(MANX_CT_F_ORIG_IS_A)
        var state: String
        if key.proto == IPProtocol.tcp.number {
            if v.has(MANX_CT_F_RST) { state = "RESET" }
            else if v.tcpClosed { state = "CLOSED" }
            else if v.has(MANX_CT_F_FIN_ORIG) || v.has(MANX_CT_F_FIN_REPLY) { state = "CLOSING" }
            else if v.has(MANX_CT_F_SEEN_REPLY) { state = "ESTABLISHED" }
            else { state = "SYN_SENT" }
        } else {
            state = v.has(MANX_CT_F_SEEN_REPLY) ? "REPLIED" : "NEW"
        }
        return ConntrackRow(
            endpoint: endpoint, direction: v.has(MANX_CT_F_EP_ORIGINATED) ? "egress" : "ingress",
            proto: IPProtocol(key.proto).description, source: origIsA ? a : b, destination: origIsA ? b : a,
            ageSeconds: Double(now &- v.created_ns) / 1e9, idleSeconds: Double(Int64(bitPattern: now &- v.last_seen_ns)) / 1e9,
            state: state, packets: v.packets, bytes: v.bytes, ruleset: v.ruleset, approvedBy: rules(v.rule_id))
    }
}

/// CLOCK_MONOTONIC, the clock bpf_ktime_get_ns uses.
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
