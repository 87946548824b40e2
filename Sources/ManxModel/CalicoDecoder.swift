import ManxSelectors

/// projectcalico.org/v3 kinds: NetworkPolicy, GlobalNetworkPolicy, Tier,
/// NetworkSet and GlobalNetworkSet. Fields are checked strictly; fields
/// Calico has but Manx cannot enforce are rejected, never ignored.
enum CalicoDecoder {
    static let policySpecFields: Set<String> = [
        "order", "tier", "selector", "types", "ingress", "egress", "serviceAccountSelector", "performanceHints",
    ]
    static let globalPolicySpecFields = policySpecFields.union(["namespaceSelector", "doNotTrack", "preDNAT", "applyOnForward"])

    static func policy(_ top: [String: YNode], global: Bool, file: String, ctx: DecodeContext) -> Policy? {
        let kind = global ? "GlobalNetworkPolicy" : "NetworkPolicy"
        guard let meta = ResourceDecoder.metadata(top, kind: kind, namespaced: !global, ctx: ctx) else { return nil }
        checkTopLevel(top, ctx: ctx)
        guard let specNode = top["spec"] else { ctx.fail("spec", "missing"); return nil }
        guard let spec = specNode.fields(allowed: global ? globalPolicySpecFields : policySpecFields) else { return nil }
        for flag in ["doNotTrack", "preDNAT", "applyOnForward"] {
            if let node = spec[flag], node.string == "true" {
                ctx.fail(node.path, "\(flag) policy applies to host endpoints, which Manx does not police")
            }
        }
        var order: Double? = nil
        if let node = spec["order"] {
            if let text = node.string, let value = Double(text), value.isFinite { order = value } else {
                ctx.fail(node.path, "order must be a number, got \(node.describe)")
            }
        }
        let tier = spec["tier"]?.string ?? "default"
        let namespace = meta.namespace
        var appliesTo = EndpointMatch(selector: selector(spec["selector"]) ?? .all,
                                      namespaces: namespace.map(NamespaceScope.named) ?? .any)
        if let nsNode = spec["namespaceSelector"], let ns = selector(nsNode) { appliesTo.namespaces = .matching(ns) }
        if let saNode = spec["serviceAccountSelector"] { appliesTo.serviceAccountSelector = selector(saNode) }

        let ingress = (spec["ingress"]?.list ?? []).enumerated().compactMap { i, node in rule(node, index: i, namespace: namespace) }
        let egress = (spec["egress"]?.list ?? []).enumerated().compactMap { i, node in rule(node, index: i, namespace: namespace) }
        // Calico's default: Egress only when there are egress rules and no
        // ingress rules; both when there are both; otherwise Ingress.
        let hasIngress = !(spec["ingress"]?.isNull ?? true), hasEgress = !(spec["egress"]?.isNull ?? true)
        var types: Set<Policy.Direction> = hasEgress ? (hasIngress ? [.ingress, .egress] : [.egress]) : [.ingress]
        if let typesNode = spec["types"], let list = typesNode.list {
            types = []
            for item in list {
                guard let text = item.string else { continue }
                guard let d = Policy.Direction(rawValue: text) else {
                    ctx.fail(item.path, "type must be Ingress or Egress, got '\(text)'")
                    continue
                }
                if !types.insert(d).inserted { ctx.fail(item.path, "type \(text) is repeated") }
            }
        }
        return Policy(name: meta.name, namespace: namespace, tier: tier, order: order, appliesTo: appliesTo,
                      types: types, ingress: ingress, egress: egress,
                      ref: ResourceRef(kind: kind, namespace: namespace, name: meta.name, file: file))
    }

    static func checkTopLevel(_ top: [String: YNode], ctx: DecodeContext) {
        for (key, node) in top where !["apiVersion", "kind", "metadata", "spec"].contains(key) {
            ctx.fail(node.path, "unknown field")
        }
    }

    /// A selector string; errors carry the character position.
    static func selector(_ node: YNode?) -> Selector? {
        guard let node, let text = node.string else { return nil }
        do {
            return try SelectorParser.parse(text)
        } catch {
            node.ctx.fail(node.path, "invalid selector '\(text)': \(error)")
            return nil
        }
    }

    static let ruleFields: Set<String> = [
        "action", "protocol", "notProtocol", "icmp", "notICMP", "ipVersion", "source", "destination", "metadata", "http",
    ]

    static func rule(_ node: YNode, index: Int, namespace: String?) -> Rule? {
        guard let f = node.fields(allowed: ruleFields) else { return nil }
        let ctx = node.ctx
        guard let actionNode = f["action"], let actionText = actionNode.string else {
            ctx.fail(node.child("action"), "missing (Allow, Deny, Pass or Log)")
            return nil
        }
        guard let action = RuleAction(rawValue: actionText) else {
            ctx.fail(actionNode.path, "action must be Allow, Deny, Pass or Log, got '\(actionText)'")
            return nil
        }
        if let http = f["http"] { ctx.fail(http.path, "HTTP match rules need an application-layer proxy, which Manx does not have") }
        var rule = Rule(action: action, index: index)
        rule.proto = proto(f["protocol"])
        rule.notProto = proto(f["notProtocol"])
        if let v = f["ipVersion"] {
            if let n = v.integer(in: 4...6, what: "ipVersion"), n == 4 || n == 6 { rule.ipVersion = n } else {
                ctx.fail(v.path, "ipVersion must be 4 or 6")
            }
        }
        rule.icmp = icmp(f["icmp"], rule: rule)
        rule.notICMP = icmp(f["notICMP"], rule: rule)
        var versions = Set<Int>()
        if let s = f["source"] { rule.source = entity(s, namespace: namespace, rule: rule, isSource: true, versions: &versions) ?? EntityRule() }
        if let d = f["destination"] {
            rule.destination = entity(d, namespace: namespace, rule: rule, isSource: false, versions: &versions) ?? EntityRule()
        }
        // A rule's CIDRs are of one IP version, as Calico's validation has
        // it. IPv6 ones make the rule an IPv6 rule, which no IPv4 packet
        // matches (`notNets: [fd00::/8]` is no match-all for IPv4).
        if versions.count > 1 {
            ctx.fail(node.path, "the rule's CIDRs mix IPv4 and IPv6 (one IP version per rule)")
        } else if versions == [6] {
            if rule.ipVersion == 4 { ctx.fail(node.child("ipVersion"), "ipVersion is 4 but the rule's CIDRs are IPv6") }
            rule.ipVersion = 6
        }
        return rule
    }

    static func proto(_ node: YNode?) -> IPProtocol? {
        guard let node, let text = node.string else { return nil }
        guard let p = IPProtocol.parse(text) else {
            node.ctx.fail(node.path, "protocol must be TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255, got '\(text)'")
            return nil
        }
        return p
    }

    static func icmp(_ node: YNode?, rule: Rule) -> ICMPMatch? {
        guard let node, let f = node.fields(allowed: ["type", "code"]) else { return nil }
        guard rule.proto == .icmp || rule.proto == .icmpv6 else {
            node.ctx.fail(node.path, "ICMP matches need protocol ICMP or ICMPv6")
            return nil
        }
        let type = f["type"].flatMap { $0.integer(in: 0...254, what: "ICMP type") }.map(UInt8.init)
        let code = f["code"].flatMap { $0.integer(in: 0...255, what: "ICMP code") }.map(UInt8.init)
        if code != nil && type == nil { node.ctx.fail(node.child("code"), "an ICMP code needs a type") }
        return ICMPMatch(type: type, code: code)
    }

    static let entityFields: Set<String> = [
        "nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports", "notPorts", "serviceAccounts", "services",
    ]

    /// `versions`: the IP versions of the CIDRs it names are added there.
    static func entity(_ node: YNode, namespace: String?, rule: Rule, isSource: Bool, versions: inout Set<Int>) -> EntityRule? {
        guard let f = node.fields(allowed: entityFields) else { return nil }
        let ctx = node.ctx
        var e = EntityRule()
        if let s = f["services"] { ctx.fail(s.path, "service matches are not supported by Manx") }
        let nets = addresses(f["nets"]), notNets = addresses(f["notNets"])
        (e.nets, e.notNets) = (nets.v4, notNets.v4)
        if !nets.v4.isEmpty || !notNets.v4.isEmpty { versions.insert(4) }
        if nets.v6 || notNets.v6 { versions.insert(6) }
        // A selector is scoped to the policy's namespace unless the rule
        // names namespaces; in a global policy it spans all of them.
        var scope: NamespaceScope = namespace.map(NamespaceScope.named) ?? .any
        if let nsNode = f["namespaceSelector"], let ns = selector(nsNode) { scope = .matching(ns) }
        let sel = selector(f["selector"])
        if sel != nil || f["namespaceSelector"] != nil { e.endpoints = EndpointMatch(selector: sel ?? .all, namespaces: scope) }
        if let notSel = selector(f["notSelector"]) { e.notSelector = EndpointMatch(selector: notSel, namespaces: scope) }
        if let sa = f["serviceAccounts"], let saf = sa.fields(allowed: ["names", "selector"]) {
            e.serviceAccountNames = saf["names"]?.stringList ?? []
            if let saSel = selector(saf["selector"]) {
                var m = e.endpoints ?? EndpointMatch(selector: .all, namespaces: scope)
                m.serviceAccountSelector = saSel
                e.endpoints = m
            }
        }
        for key in ["ports", "notPorts"] {
            guard let portsNode = f[key], let items = portsNode.list else { continue }
            if isSource && !items.isEmpty {
                ctx.fail(portsNode.path, "source ports are not supported by the Manx dataplane (policy keys on destination ports)")
                continue
            }
            if !items.isEmpty && !(rule.proto?.hasPorts ?? false) {
                ctx.fail(portsNode.path, "\(key) need protocol TCP, UDP, SCTP or UDPLite")
                continue
            }
            let parsed = items.compactMap(port)
            if key == "ports" { e.ports = parsed } else { e.notPorts = parsed }
        }
        return e
    }

    /// The IPv4 CIDRs of a list, and whether it holds IPv6 ones (valid, and
    /// never matching: Manx drops IPv6 traffic).
    static func addresses(_ node: YNode?) -> (v4: [CIDR], v6: Bool) {
        guard let items = node?.list else { return ([], false) }
        var v6 = false
        let v4 = items.compactMap { item -> CIDR? in
            guard let text = item.string else { return nil }
            switch CIDR.parse(text) {
            case .success(let c): return c
            case .failure(let f):
                if text.contains(":") {
                    if IPv6Prefix(text) != nil { v6 = true } else { item.ctx.fail(item.path, "'\(text)' is not an IPv6 CIDR") }
                } else {
                    item.ctx.fail(item.path, f.reason)
                }
                return nil
            }
        }
        return (v4, v6)
    }

    /// A network set's IPv4 CIDRs (its IPv6 ones match no packet here).
    static func cidrs(_ node: YNode?) -> [CIDR] { addresses(node).v4 }

    /// 80, "80", "1000:2000", or a port name.
    static func port(_ node: YNode) -> PortMatch? {
        guard let text = node.string else { return nil }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        if parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isNumber) }) {
            let numbers = parts.compactMap { Int($0) }
            guard numbers.count == parts.count, (1...2).contains(numbers.count), numbers.allSatisfy({ (0...65535).contains($0) }) else {
                node.ctx.fail(node.path, "port '\(text)' is out of range 0-65535 or malformed")
                return nil
            }
            let lo = numbers[0], hi = numbers.last!
            guard lo <= hi else { node.ctx.fail(node.path, "port range '\(text)' has its start above its end"); return nil }
            return .range(UInt16(lo), UInt16(hi))
        }
        if text.contains(":") { node.ctx.fail(node.path, "port range '\(text)' must be two numbers 'lo:hi'"); return nil }
        if let reason = ResourceDecoder.validatePortName(text) { node.ctx.fail(node.path, reason); return nil }
        return .named(text)
    }

    static func profile(_ top: [String: YNode], file: String, ctx: DecodeContext) -> Profile? {
        guard let meta = ResourceDecoder.metadata(top, kind: "Profile", namespaced: false, ctx: ctx) else { return nil }
        checkTopLevel(top, ctx: ctx)
        let spec = top["spec"]?.fields(allowed: ["ingress", "egress", "labelsToApply"]) ?? [:]
        var labels: [String: String] = [:]
        if let node = spec["labelsToApply"] {
            labels = node.stringMap ?? [:]
            ResourceDecoder.validateLabels(labels, path: node.path, ctx: ctx)
        }
        func rules(_ key: String) -> [Rule] {
            (spec[key]?.list ?? []).enumerated().compactMap { i, node -> Rule? in
                guard let r = rule(node, index: i, namespace: nil) else { return nil }
                if r.action == .pass { ctx.fail(node.child("action"), "Pass has no next tier in a profile; use Allow, Deny or Log") }
                return r
            }
        }
        return Profile(name: meta.name, ingress: rules("ingress"), egress: rules("egress"), labelsToApply: labels,
                       ref: ResourceRef(kind: "Profile", namespace: nil, name: meta.name, file: file))
    }

    // MARK: Tiers and network sets

    static func tier(_ top: [String: YNode], file: String, ctx: DecodeContext) -> Tier? {
        guard let meta = ResourceDecoder.metadata(top, kind: "Tier", namespaced: false, ctx: ctx) else { return nil }
        checkTopLevel(top, ctx: ctx)
        let spec = top["spec"]?.fields(allowed: ["order", "defaultAction"]) ?? [:]
        var order: Double? = nil
        if let node = spec["order"] {
            if let text = node.string, let v = Double(text), v.isFinite { order = v } else {
                ctx.fail(node.path, "order must be a number, got \(node.describe)")
            }
        }
        var pass = false
        if let node = spec["defaultAction"], let text = node.string {
            switch text {
            case "Deny": pass = false
            case "Pass": pass = true
            default: ctx.fail(node.path, "defaultAction must be Deny or Pass, got '\(text)'")
            }
        }
        return Tier(name: meta.name, order: order, defaultPass: pass,
                    ref: ResourceRef(kind: "Tier", namespace: nil, name: meta.name, file: file))
    }

    static func networkSet(_ top: [String: YNode], global: Bool, file: String, ctx: DecodeContext) -> NetworkSet? {
        let kind = global ? "GlobalNetworkSet" : "NetworkSet"
        guard let meta = ResourceDecoder.metadata(top, kind: kind, namespaced: !global, ctx: ctx) else { return nil }
        checkTopLevel(top, ctx: ctx)
        let spec = top["spec"]?.fields(allowed: ["nets", "allowedEgressDomains"]) ?? [:]
        if let domains = spec["allowedEgressDomains"] { ctx.fail(domains.path, "domain-based network sets are not supported by Manx") }
        return NetworkSet(name: meta.name, namespace: meta.namespace, labels: meta.labels, nets: cidrs(spec["nets"]),
                          ref: ResourceRef(kind: kind, namespace: meta.namespace, name: meta.name, file: file))
    }
}
