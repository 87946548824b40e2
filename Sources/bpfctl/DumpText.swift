import ManxDataplane
import ManxNodeState

/// The human form of `bpfctl dump`.
enum DumpText {
    /// Columns padded to their widest cell; every line indented.
    static func table(_ header: [String], _ rows: [[String]], indent: String = "  ") -> String {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).map { indent + $0 }.joined(separator: "\n")
    }

    static func render(_ r: DumpReport) -> String {
        var out: [String] = []
        out.append("Node \(r.node): generation \(r.generation), \(r.endpoints.count) endpoints, \(r.rulesets) rule sets, \(r.policyEntries) policy entries")
        if let error = r.lastError { out.append("Last rejected batch: \(error)") }
        for ep in r.endpoints {
            out.append("")
            out.append("Endpoint \(ep.workload) \(ep.ip) on \(ep.interface) (ifindex \(ep.ifindex)), identity \(ep.identity)")
            for (label, ruleset, rows) in [("ingress", ep.ingressRuleset, ep.ingressPolicy), ("egress", ep.egressRuleset, ep.egressPolicy)] {
                out.append(" \(label) policy (rule set \(ruleset)):")
                out.append(table(["PEER", "PROTO", "PORTS", "ACTION", "HITS", "RULE"],
                                 rows.map { [$0.peer, $0.proto, $0.ports, $0.action, "\($0.hits)", $0.rule] }))
            }
            out.append(" conntrack: \(ep.conntrackEntries) of \(ep.conntrackBudget) entries")
            out.append(" counters:")
            let names = DumpReport.counterNames
            out.append(table(["DIRECTION"] + names, ["ingress", "egress"].map { dir in
                [dir] + names.map { "\(ep.counters[dir]?[$0] ?? 0)" }
            }))
        }
        out.append("")
        out.append("IP cache (\(r.ipcache.count) entries):")
        out.append(table(["CIDR", "IDENTITY", "MEMBERS"], r.ipcache.map { [$0.cidr, "\($0.identity)", $0.members.joined(separator: ", ")] }))
        out.append("")
        out.append("Conntrack (\(r.conntrack.count) entries):")
        out.append(table(["ENDPOINT", "DIR", "PROTO", "SOURCE", "DESTINATION", "STATE", "AGE", "IDLE", "PKTS", "APPROVED BY"],
                         r.conntrack.map {
                             [$0.endpoint, $0.direction, $0.proto, $0.source, $0.destination, $0.state, String(format: "%.1fs", $0.ageSeconds),
                              String(format: "%.1fs", $0.idleSeconds), "\($0.packets)", "rule set \($0.ruleset): \($0.approvedBy)"]
                         }))
        if let n = r.routing {
            out.append("")
            let vxlan = r.routes.contains { $0.encapsulation == "vxlan" } ? ", VXLAN \(n.vxlan)" : ""
            out.append("Routing: node \(n.address) on \(n.underlay) (MTU \(n.underlayMTU)), pod MTU \(n.podMTU.map(String.init) ?? "?")\(vxlan)")
            out.append(table(["CIDR", "NEXT HOP", "ENCAPSULATION"], r.routes.map { [$0.cidr, $0.nextHop ?? "this node", $0.encapsulation] }))
            out.append(table(DumpReport.nodeStatNames, [DumpReport.nodeStatNames.map { "\(r.nodeStatistics[$0] ?? 0)" }]))
        }
        return out.joined(separator: "\n")
    }
}
