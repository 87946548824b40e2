import ManxModel

/// One-line, human descriptions of rules for `bpfctl` and flow logs.
enum RuleSummary {
    static func describe(_ rule: Rule, direction: Policy.Direction) -> String {
        var parts = [rule.action.rawValue]
        if let p = rule.proto { parts.append(p.description) }
        if let p = rule.notProto { parts.append("not \(p)") }
        if let icmp = rule.icmp { parts.append("icmp type=\(icmp.type.map(String.init) ?? "any") code=\(icmp.code.map(String.init) ?? "any")") }
        if let icmp = rule.notICMP { parts.append("not icmp type=\(icmp.type.map(String.init) ?? "any") code=\(icmp.code.map(String.init) ?? "any")") }
        let peer = direction == .ingress ? rule.source : rule.destination
        let peerText = entity(peer)
        parts.append((direction == .ingress ? "from " : "to ") + (peerText.isEmpty ? "any" : peerText))
        if !rule.destination.ports.isEmpty { parts.append("ports " + rule.destination.ports.map(\.description).joined(separator: ",")) }
        if !rule.destination.notPorts.isEmpty { parts.append("not ports " + rule.destination.notPorts.map(\.description).joined(separator: ",")) }
        return parts.joined(separator: " ")
    }

    static func entity(_ e: EntityRule) -> String {
        var parts: [String] = []
        if !e.nets.isEmpty { parts.append("nets " + e.nets.map(\.description).joined(separator: ",")) }
        if !e.notNets.isEmpty { parts.append("not nets " + e.notNets.map(\.description).joined(separator: ",")) }
        if let ep = e.endpoints { parts.append(match(ep)) }
        if let ns = e.notSelector { parts.append("not (\(match(ns)))") }
        if !e.serviceAccountNames.isEmpty { parts.append("serviceAccounts " + e.serviceAccountNames.joined(separator: ",")) }
        return parts.joined(separator: " ")
    }

    static func match(_ m: EndpointMatch) -> String {
        let ns: String
        switch m.namespaces {
        case .any: ns = ""
        case .named(let n): ns = "namespace \(n) "
        case .matching(let sel): ns = "namespaces [\(sel)] "
        }
        return "\(ns)pods [\(m.selector)]"
    }
}
