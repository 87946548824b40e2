import ManxModel
import ManxSelectors

/// An independent, deliberately naive evaluator of Calico policy semantics,
/// used as the oracle that differential tests compare the compiler and the
/// BPF programs against. It walks tiers, policies and rules for one
/// connection at a time; nothing is precompiled beyond an address index.
///
/// When no tier decides, the endpoint's profiles do: `kns.<namespace>`
/// (built in: allow everything, unless a Profile resource of that name
/// replaces it), then `ksa.<namespace>.<serviceaccount>`; if no profile
/// rule matches, the connection is denied.
public struct ReferenceEvaluator {
    let resources: ResourceSet
    /// Workloads by address. If several pods claim one address, the one with
    /// the smallest "namespace/name" owns it.
    let podsByIP: [IPv4Address: Pod]
    /// Tiers in evaluation order: (order, nil last), then name.
    let tiers: [Tier]

    public init(_ resources: ResourceSet) {
        self.resources = resources
        var byIP: [IPv4Address: Pod] = [:]
        for pod in resources.pods.values.sorted(by: { $0.key > $1.key }) {
            if let ip = pod.ip { byIP[ip] = pod }
        }
        podsByIP = byIP
        tiers = resources.tiers.values.sorted { ReferenceEvaluator.before(($0.order, $0.name), ($1.order, $1.name)) }
    }

    /// Is a NEW connection allowed by `endpoint`'s policy in `direction`?
    /// endpoint: "namespace/name" of a Pod in resources (must have an IP).
    /// direction .ingress: peer -> endpoint; .egress: endpoint -> peer.
    /// proto: IP protocol number. port: destination port for TCP/UDP/SCTP/UDPLite;
    /// for ICMP it is type<<8 | code; ignored (pass 0) for other protocols.
    public func allows(endpoint: String, direction: Policy.Direction, peer: IPv4Address, proto: UInt8, port: UInt16) -> Bool {
        explain(endpoint: endpoint, direction: direction, peer: peer, proto: proto, port: port).allowed
    }

    /// Same, but also returns which tier/policy/rule decided.
    public func explain(endpoint: String, direction: Policy.Direction, peer: IPv4Address, proto: UInt8,
                        port: UInt16) -> (allowed: Bool, why: String) {
        guard let pod = resources.pods[endpoint], let ip = pod.ip else {
            preconditionFailure("ReferenceEvaluator: \(endpoint) is not a pod with an IP")
        }
        // Before any policy, as in Calico: a workload may not send tunnel
        // packets (IPIP, UDP to the VXLAN port) that a node would decapsulate.
        if direction == .egress && (proto == 4 || (proto == 17 && port == 4789)) {
            return (false, "workloads may not send IPIP or VXLAN")
        }
        // An ICMP error (unreachable, source quench, redirect, time
        // exceeded, parameter problem) passes only with the flow it quotes,
        // never on its own: as in Calico, policy only opens flows.
        if proto == 1 && [3, 4, 5, 11, 12].contains(port >> 8) {
            return (false, "an ICMP error passes only as part of the flow it quotes")
        }
        let packet = Packet(direction: direction, local: pod, localIP: ip, peer: peer, peerPod: podsByIP[peer],
                            proto: proto, port: port)
        var trace: [String] = []
        tierLoop: for tier in tiers {
            let applying = resources.policies
                .filter { $0.tier == tier.name && $0.types.contains(direction) && selects($0.appliesTo, pod: pod) }
                .sorted { ReferenceEvaluator.before(($0.order, $0.qualifiedName), ($1.order, $1.qualifiedName)) }
            if applying.isEmpty { continue }
            for policy in applying {
                for rule in policy.rules(direction) where matches(rule, packet) {
                    let what = "tier \(tier.name): policy \(policy.qualifiedName) \(direction.rawValue.lowercased()) rule \(rule.index) (\(rule.action.rawValue))"
                    switch rule.action {
                    case .allow: return (true, (trace + ["\(what) -> allowed"]).joined(separator: "; "))
                    case .deny: return (false, (trace + ["\(what) -> denied"]).joined(separator: "; "))
                    case .pass: trace.append("\(what) -> next tier"); continue tierLoop
                    case .log: trace.append("\(what) -> logged")
                    }
                }
            }
            let names = applying.map(\.qualifiedName).joined(separator: ", ")
            if !tier.defaultPass {
                return (false, (trace + ["tier \(tier.name): no rule of [\(names)] matched -> denied (default Deny)"]).joined(separator: "; "))
            }
            trace.append("tier \(tier.name): no rule of [\(names)] matched -> next tier (default Pass)")
        }
        for name in pod.profiles ?? ["kns.\(pod.namespace)", "ksa.\(pod.namespace).\(pod.serviceAccount)"] {
            guard let profile = resources.profiles[name] else {
                if name.hasPrefix("kns."), pod.profiles == nil { return (true, (trace + ["built-in profile \(name) -> allowed"]).joined(separator: "; ")) }
                continue
            }
            for rule in profile.rules(direction) where matches(rule, packet) {
                let what = "profile \(name) rule \(rule.index) (\(rule.action.rawValue))"
                switch rule.action {
                case .allow: return (true, (trace + ["\(what) -> allowed"]).joined(separator: "; "))
                case .deny: return (false, (trace + ["\(what) -> denied"]).joined(separator: "; "))
                case .pass, .log: trace.append("\(what) -> continue")
                }
            }
        }
        return (false, (trace + ["no profile rule matched -> denied"]).joined(separator: "; "))
    }

    // MARK: Ordering

    /// (order, name) with a nil order after every number.
    static func before(_ a: (Double?, String), _ b: (Double?, String)) -> Bool {
        let x = a.0 ?? .infinity, y = b.0 ?? .infinity
        return x != y ? x < y : a.1 < b.1
    }

    // MARK: Labels and selection

    /// The namespace's labels as `pcns.*` and the endpoint's profiles'
    /// labelsToApply, under the pod's own labels and Calico's.
    func endpointLabels(_ pod: Pod) -> [String: String] {
        var labels: [String: String] = [:]
        for (k, v) in resources.namespaces[pod.namespace]?.labels ?? [:] { labels["pcns.\(k)"] = v }
        for name in pod.profiles ?? ["kns.\(pod.namespace)", "ksa.\(pod.namespace).\(pod.serviceAccount)"] {
            for (k, v) in resources.profiles[name]?.labelsToApply ?? [:] { labels[k] = v }
        }
        for (k, v) in pod.labels { labels[k] = v }
        labels["projectcalico.org/namespace"] = pod.namespace
        labels["projectcalico.org/orchestrator"] = pod.orchestrator.rawValue
        if pod.orchestrator == .k8s { labels["projectcalico.org/serviceaccount"] = pod.serviceAccount }
        return labels
    }

    /// Labels of a pod's namespace as namespace selectors see them.
    func namespaceLabels(_ ns: String) -> [String: String] {
        var labels = resources.namespaces[ns]?.labels ?? [:]
        labels["projectcalico.org/name"] = ns
        labels["kubernetes.io/metadata.name"] = ns
        return labels
    }

    func selects(_ m: EndpointMatch, pod: Pod) -> Bool {
        switch m.namespaces {
        case .any: break
        case .named(let ns): if pod.namespace != ns { return false }
        case .matching(let sel): if !sel.matchesNamespace(namespaceLabels(pod.namespace), namespaced: true) { return false }
        }
        if let sa = m.serviceAccountSelector, !sa.matches(["projectcalico.org/name": pod.serviceAccount]) { return false }
        return m.selector.matches(endpointLabels(pod))
    }

    func selects(_ m: EndpointMatch, set: NetworkSet) -> Bool {
        if m.serviceAccountSelector != nil { return false }
        switch m.namespaces {
        case .any: break
        case .named(let ns): if set.namespace != ns { return false }
        case .matching(let sel):
            let labels = set.namespace.map(namespaceLabels) ?? [:]
            if !sel.matchesNamespace(labels, namespaced: set.namespace != nil) { return false }
        }
        return m.selector.matches(set.labels)
    }

    // MARK: Rules

    struct Packet {
        var direction: Policy.Direction
        var local: Pod
        var localIP: IPv4Address
        var peer: IPv4Address
        var peerPod: Pod?
        var proto: UInt8
        var port: UInt16
    }

    func matches(_ rule: Rule, _ p: Packet) -> Bool {
        if rule.ipVersion == 6 { return false }
        if let want = rule.proto, want.number != p.proto { return false }
        if let not = rule.notProto, not.number == p.proto { return false }
        func icmpMatches(_ m: ICMPMatch) -> Bool {
            p.proto == IPProtocol.icmp.number && (m.type.map { UInt16($0) == p.port >> 8 } ?? true)
                && (m.code.map { UInt16($0) == p.port & 0xff } ?? true)
        }
        if let m = rule.icmp, !icmpMatches(m) { return false }
        if let m = rule.notICMP, icmpMatches(m) { return false }
        let (peerSide, localSide) = p.direction == .ingress ? (rule.source, rule.destination) : (rule.destination, rule.source)
        guard matches(peerSide, address: p.peer, pod: p.peerPod),
              matches(localSide, address: p.localIP, pod: p.local) else { return false }
        return portsMatch(rule.destination, p)
    }

    /// Addresses, selectors and service accounts of one side (not ports).
    func matches(_ e: EntityRule, address: IPv4Address, pod: Pod?) -> Bool {
        if !e.nets.isEmpty && !e.nets.contains(where: { $0.contains(address) }) { return false }
        if e.notNets.contains(where: { $0.contains(address) }) { return false }
        let sets = resources.networkSets.filter { $0.nets.contains { $0.contains(address) } }
        func selected(_ m: EndpointMatch) -> Bool {
            (pod.map { selects(m, pod: $0) } ?? false) || sets.contains { selects(m, set: $0) }
        }
        if let m = e.endpoints, !selected(m) { return false }
        if let m = e.notSelector, selected(m) { return false }
        if !e.serviceAccountNames.isEmpty {
            guard let pod, e.serviceAccountNames.contains(pod.serviceAccount) else { return false }
        }
        return true
    }

    func portsMatch(_ destination: EntityRule, _ p: Packet) -> Bool {
        if destination.ports.isEmpty && destination.notPorts.isEmpty { return true }
        guard IPProtocol(p.proto).hasPorts else { return false }
        // Named ports belong to the destination workload.
        let owner = p.direction == .ingress ? p.local : p.peerPod
        func hit(_ m: PortMatch) -> Bool {
            switch m {
            case let .range(lo, hi): return (lo...hi).contains(p.port)
            case let .named(name):
                return owner?.ports.contains { $0.name == name && $0.proto.number == p.proto && $0.port == p.port } ?? false
            }
        }
        if !destination.ports.isEmpty && !destination.ports.contains(where: hit) { return false }
        return !destination.notPorts.contains(where: hit)
    }
}
