import ManxSelectors

/// Kubernetes kinds: Namespace, Pod and networking.k8s.io/v1 NetworkPolicy.
/// Namespaces and Pods have large schemas of which Manx reads a few fields,
/// so other fields there are ignored; NetworkPolicy is checked strictly.
enum KubernetesDecoder {
    static func namespace(_ top: [String: YNode], file: String, ctx: DecodeContext) -> Namespace? {
        guard let meta = ResourceDecoder.metadata(top, kind: "Namespace", namespaced: false, ctx: ctx) else { return nil }
        if let reason = ResourceDecoder.validateDNSLabel(meta.name) { ctx.fail("metadata.name", reason) }
        var labels = meta.labels
        // Kubernetes sets this label on every namespace.
        labels["kubernetes.io/metadata.name"] = meta.name
        return Namespace(name: meta.name, labels: labels, annotations: meta.annotations,
                         ref: ResourceRef(kind: "Namespace", namespace: nil, name: meta.name, file: file))
    }

    static func pod(_ top: [String: YNode], file: String, ctx: DecodeContext) -> Pod? {
        guard let meta = ResourceDecoder.metadata(top, kind: "Pod", namespaced: true, ctx: ctx) else { return nil }
        let spec = top["spec"]?.fields() ?? [:]
        var ports: [NamedPort] = []
        for container in spec["containers"]?.list ?? [] {
            guard let c = container.fields() else { continue }
            for portNode in c["ports"]?.list ?? [] {
                guard let p = portNode.fields() else { continue }
                guard let number = p["containerPort"]?.integer(in: 1...65535, what: "containerPort") else {
                    if p["containerPort"] == nil { ctx.fail(portNode.child("containerPort"), "missing") }
                    continue
                }
                let protoText = p["protocol"]?.string ?? "TCP"
                guard let proto = IPProtocol.parse(protoText), [.tcp, .udp, .sctp].contains(proto) else {
                    ctx.fail(portNode.child("protocol"), "protocol must be TCP, UDP or SCTP, got '\(protoText)'")
                    continue
                }
                if let name = p["name"]?.string {
                    if let reason = ResourceDecoder.validatePortName(name) { ctx.fail(portNode.child("name"), reason); continue }
                    ports.append(NamedPort(name: name, proto: proto, port: UInt16(number)))
                }
            }
        }
        var ip: IPv4Address? = nil
        if let status = top["status"]?.fields(), let ipNode = status["podIP"], let text = ipNode.string, !text.isEmpty {
            if let parsed = IPv4Address(text) { ip = parsed } else { ctx.fail(ipNode.path, "'\(text)' is not an IPv4 address") }
        }
        let serviceAccount = spec["serviceAccountName"]?.string ?? "default"
        return Pod(namespace: meta.namespace!, name: meta.name, labels: meta.labels, annotations: meta.annotations,
                   ip: ip, ports: ports, serviceAccount: serviceAccount, nodeName: spec["nodeName"]?.string,
                   ref: ResourceRef(kind: "Pod", namespace: meta.namespace, name: meta.name, file: file))
    }

    // MARK: NetworkPolicy

    static func networkPolicy(_ top: [String: YNode], file: String, ctx: DecodeContext) -> Policy? {
        guard let meta = ResourceDecoder.metadata(top, kind: "NetworkPolicy", namespaced: true, ctx: ctx) else { return nil }
        let namespace = meta.namespace!
        _ = top.filter { !["apiVersion", "kind", "metadata", "spec", "status"].contains($0.key) }.map {
            ctx.fail($0.value.path, "unknown field")
        }
        guard let specNode = top["spec"] else { ctx.fail("spec", "missing"); return nil }
        guard let spec = specNode.fields(allowed: ["podSelector", "policyTypes", "ingress", "egress"]) else { return nil }
        guard let podSelectorNode = spec["podSelector"] else { ctx.fail("spec.podSelector", "missing (use {} to select all pods)"); return nil }
        let podSelector = labelSelector(podSelectorNode)

        let ingressRules = (spec["ingress"]?.list ?? []).flatMap { rules($0, direction: .ingress, namespace: namespace) }
        let egressRules = (spec["egress"]?.list ?? []).flatMap { rules($0, direction: .egress, namespace: namespace) }

        // policyTypes defaults to Ingress, plus Egress when there are egress
        // rules, as the API server's defaulting has it: `egress: []` (no
        // rules) leaves a policy ingress-only, and its pods' egress open.
        var types: Set<Policy.Direction> = [.ingress]
        if let egress = spec["egress"]?.node.sequence, !egress.isEmpty { types.insert(.egress) }
        if let typesNode = spec["policyTypes"], let list = typesNode.list {
            types = []
            for item in list {
                guard let text = item.string else { continue }
                guard let direction = Policy.Direction(rawValue: text) else {
                    ctx.fail(item.path, "policy type must be Ingress or Egress, got '\(text)'")
                    continue
                }
                types.insert(direction)
            }
        }
        guard let podSelector else { return nil }
        var numbered = (ingress: ingressRules, egress: egressRules)
        for i in numbered.ingress.indices { numbered.ingress[i].index = i }
        for i in numbered.egress.indices { numbered.egress[i].index = i }
        return Policy(
            name: "knp.default.\(meta.name)", namespace: namespace, tier: "default", order: 1000,
            // As Calico's converter does: a Kubernetes policy selects pods,
            // never another runtime's containers in the same namespace.
            appliesTo: EndpointMatch(selector: .and(podSelector, .equals("projectcalico.org/orchestrator", "k8s")), namespaces: .named(namespace)),
            types: types, ingress: numbered.ingress, egress: numbered.egress,
            ref: ResourceRef(kind: "NetworkPolicy", namespace: namespace, name: meta.name, file: file))
    }

    /// One Kubernetes rule becomes one Calico Allow rule per (peer, port):
    /// peers and ports are each ORed, which ordered rules express exactly.
    static func rules(_ node: YNode, direction: Policy.Direction, namespace: String) -> [Rule] {
        let peersKey = direction == .ingress ? "from" : "to"
        guard let fields = node.fields(allowed: [peersKey, "ports"]) else { return [] }
        var peers: [(EntityRule, ipv6: Bool)?] = [(EntityRule(), false)]
        if let peerList = fields[peersKey]?.list, !peerList.isEmpty {
            peers = peerList.map { peer($0, namespace: namespace) }
        }
        var ports: [(IPProtocol?, PortMatch?)?] = [(nil, nil)]
        if let portList = fields["ports"]?.list, !portList.isEmpty {
            ports = portList.map(port)
        }
        var result: [Rule] = []
        for case let (entity, ipv6)? in peers {
            for case let (proto, portMatch)? in ports {
                var rule = Rule(action: .allow, index: 0)
                rule.proto = proto
                // An IPv6 ipBlock: a rule no IPv4 packet matches.
                if ipv6 { rule.ipVersion = 6 }
                // Ingress: the peer is the source and the ports are ours.
                // Egress: the peer is the destination and owns the ports.
                if direction == .ingress { rule.source = entity } else { rule.destination = entity }
                rule.destination.ports = portMatch.map { [$0] } ?? []
                result.append(rule)
            }
        }
        return result
    }

    /// The peer, and whether it is an IPv6 ipBlock.
    static func peer(_ node: YNode, namespace: String) -> (EntityRule, ipv6: Bool)? {
        guard let fields = node.fields(allowed: ["podSelector", "namespaceSelector", "ipBlock"]) else { return nil }
        if fields.isEmpty { node.ctx.fail(node.path, "a peer must set podSelector, namespaceSelector or ipBlock"); return nil }
        var entity = EntityRule()
        if let block = fields["ipBlock"] {
            if fields.count > 1 { node.ctx.fail(block.path, "ipBlock cannot be combined with podSelector or namespaceSelector") }
            guard let b = block.fields(allowed: ["cidr", "except"]) else { return nil }
            guard let cidrNode = b["cidr"], let text = cidrNode.string else { node.ctx.fail(block.child("cidr"), "missing"); return nil }
            if text.contains(":") { return isIPv6Block(text, cidrNode, except: b["except"]) ? (entity, true) : nil }
            guard case .success(let cidr) = parseCIDR(text, cidrNode) else { return nil }
            entity.nets = [cidr]
            for ex in b["except"]?.list ?? [] {
                guard let t = ex.string, case .success(let e) = parseCIDR(t, ex) else { continue }
                guard cidr.contains(e), e != cidr else {
                    node.ctx.fail(ex.path, "except '\(t)' must be strictly inside cidr '\(cidr)'")
                    continue
                }
                entity.notNets.append(e)
            }
            return (entity, false)
        }
        let pods = fields["podSelector"].map(labelSelector) ?? .all
        let namespaces: NamespaceScope
        if let nsNode = fields["namespaceSelector"] {
            guard let ns = labelSelector(nsNode) else { return nil }
            namespaces = .matching(ns)
        } else {
            namespaces = .named(namespace)
        }
        guard let pods else { return nil }
        // As Calico's converter does: Kubernetes peers are pods, never
        // network sets, which lack this label.
        entity.endpoints = EndpointMatch(selector: .and(pods, .equals("projectcalico.org/orchestrator", "k8s")),
                                         namespaces: namespaces)
        return (entity, false)
    }

    /// Whether an IPv6 ipBlock is valid as the API server has it (its
    /// excepts strictly inside it); its errors are reported.
    static func isIPv6Block(_ text: String, _ node: YNode, except: YNode?) -> Bool {
        guard let cidr = IPv6Prefix(text) else { node.ctx.fail(node.path, "'\(text)' is not an IPv6 CIDR"); return false }
        for ex in except?.list ?? [] {
            guard let t = ex.string else { continue }
            guard let e = IPv6Prefix(t) else { ex.ctx.fail(ex.path, "'\(t)' is not an IPv6 CIDR"); continue }
            if !cidr.contains(e) || e == cidr { ex.ctx.fail(ex.path, "except '\(t)' must be strictly inside cidr '\(text)'") }
        }
        return true
    }

    static func parseCIDR(_ text: String, _ node: YNode) -> Result<CIDR, CIDR.ParseFailure> {
        let result = CIDR.parse(text)
        if case .failure(let f) = result { node.ctx.fail(node.path, f.reason) }
        return result
    }

    /// A `ports` entry: protocol (default TCP), port (number or name) and endPort.
    static func port(_ node: YNode) -> (IPProtocol?, PortMatch?)? {
        guard let f = node.fields(allowed: ["protocol", "port", "endPort"]) else { return nil }
        let protoText = f["protocol"]?.string ?? "TCP"
        guard let proto = IPProtocol.parse(protoText), [.tcp, .udp, .sctp].contains(proto) else {
            node.ctx.fail(node.child("protocol"), "protocol must be TCP, UDP or SCTP, got '\(protoText)'")
            return nil
        }
        guard let portNode = f["port"] else {
            if f["endPort"] != nil { node.ctx.fail(node.child("endPort"), "endPort requires port") }
            return (proto, nil)
        }
        if let number = portNode.plainInteger {
            guard (1...65535).contains(number) else {
                node.ctx.fail(portNode.path, "port \(number) is out of range 1-65535")
                return nil
            }
            var hi = number
            if let endNode = f["endPort"] {
                guard let end = endNode.integer(in: 1...65535, what: "endPort") else { return nil }
                guard end >= number else {
                    node.ctx.fail(endNode.path, "endPort \(end) is below port \(number)")
                    return nil
                }
                hi = end
            }
            return (proto, .range(UInt16(number), UInt16(hi)))
        }
        guard let name = portNode.string else { return nil }
        if let reason = ResourceDecoder.validatePortName(name) { node.ctx.fail(portNode.path, reason); return nil }
        if f["endPort"] != nil { node.ctx.fail(node.child("endPort"), "endPort requires a numeric port, not the name '\(name)'"); return nil }
        return (proto, .named(name))
    }

    /// A Kubernetes LabelSelector, translated to the selector language.
    static func labelSelector(_ node: YNode) -> Selector? {
        guard let f = node.fields(allowed: ["matchLabels", "matchExpressions"]) else { return nil }
        var parts: [Selector] = []
        var ok = true
        if let labelsNode = f["matchLabels"] {
            let labels = labelsNode.stringMap ?? [:]
            ResourceDecoder.validateLabels(labels, path: labelsNode.path, ctx: node.ctx)
            parts += labels.sorted { $0.key < $1.key }.map { Selector.equals($0.key, $0.value) }
        }
        for expr in f["matchExpressions"]?.list ?? [] {
            guard let e = expr.fields(allowed: ["key", "operator", "values"]) else { ok = false; continue }
            guard let key = e["key"]?.string else { expr.ctx.fail(expr.child("key"), "missing"); ok = false; continue }
            if let reason = LabelValidation.validateKey(key) { expr.ctx.fail(expr.child("key"), "invalid label key: \(reason)"); ok = false }
            guard let op = e["operator"]?.string else { expr.ctx.fail(expr.child("operator"), "missing"); ok = false; continue }
            let values = e["values"]?.stringList ?? []
            for (i, v) in values.enumerated() {
                if let reason = LabelValidation.validateValue(v) { expr.ctx.fail("\(expr.child("values"))[\(i)]", "invalid label value '\(v)': \(reason)"); ok = false }
            }
            switch op {
            case "In", "NotIn":
                if values.isEmpty { expr.ctx.fail(expr.child("values"), "operator \(op) needs at least one value"); ok = false; continue }
                parts.append(op == "In" ? .inSet(key, Set(values)) : .notInSet(key, Set(values)))
            case "Exists", "DoesNotExist":
                if !values.isEmpty { expr.ctx.fail(expr.child("values"), "operator \(op) takes no values"); ok = false; continue }
                parts.append(op == "Exists" ? .has(key) : .not(.has(key)))
            default:
                expr.ctx.fail(expr.child("operator"), "operator must be In, NotIn, Exists or DoesNotExist, got '\(op)'")
                ok = false
            }
        }
        return ok ? Selector.allOf(parts) : nil
    }
}
