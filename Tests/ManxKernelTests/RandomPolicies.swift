import Foundation

/// A small, seeded PRNG (SplitMix64), so a failing run can be replayed
/// exactly from the seed it prints.
struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random but valid clusters and policy sets, as YAML, covering tiers,
/// orders and ties, Allow/Deny/Pass/Log, nets/notNets, ports/notPorts and
/// ranges, named ports, protocols and notProtocol, ICMP type/code,
/// selectors, namespace selectors, notSelector and network sets.
struct RandomPolicySet {
    struct PodInfo {
        var namespace: String
        var name: String
        var ip: String
        var local: Bool
        var ports: [(String, String, Int)] // name, protocol, port
    }

    var rng: SeededRandom
    var pods: [PodInfo] = []
    var yaml = ""
    /// Ports, CIDRs and addresses the policies mention, for packets to probe.
    var mentionedPorts: Set<Int> = [1, 80, 443, 32767]
    var mentionedNets: [String] = []

    static let namespaces = ["x", "y", "z"]
    static let apps = ["web", "db", "cache"]
    static let tiers = ["security", "platform"]
    static let portNames = ["http", "dns", "metrics"]

    init(seed: UInt64) {
        rng = SeededRandom(seed: seed)
        generate()
    }

    mutating func pick<T>(_ items: [T]) -> T { items[Int.random(in: 0..<items.count, using: &rng)] }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
    mutating func int(_ r: ClosedRange<Int>) -> Int { Int.random(in: r, using: &rng) }

    mutating func generate() {
        var docs: [String] = []
        for ns in Self.namespaces {
            docs.append("apiVersion: v1\nkind: Namespace\nmetadata: {name: \(ns), labels: {env: \(pick(["prod", "dev"]))\(chance(0.5) ? ", team: \(pick(["a", "b"]))" : "")}}")
        }
        // Pods: three local endpoints (under test) and remote peers.
        for i in 0..<9 {
            let ns = Self.namespaces[i % 3]
            var labels = ["app: \(pick(Self.apps))"]
            if chance(0.5) { labels.append("tier: '\(int(1...2))'") }
            if chance(0.3) { labels.append("role: \(pick(["frontend", "backend-v1", "backend-v2"]))") }
            var ports: [(String, String, Int)] = []
            for name in Self.portNames where chance(0.5) {
                let proto = name == "dns" ? "UDP" : "TCP"
                let port = pick([53, 80, 8080, 9090, 5353, int(1...32767)])
                ports.append((name, proto, port))
                mentionedPorts.insert(port)
            }
            let pod = PodInfo(namespace: ns, name: "p\(i)", ip: "10.30.\(i / 4).\(i % 4 + 1)", local: i < 3, ports: ports)
            pods.append(pod)
            let portYAML = ports.map { "{name: \($0.0), protocol: \($0.1), containerPort: \($0.2)}" }.joined(separator: ", ")
            docs.append("""
            apiVersion: v1
            kind: Pod
            metadata: {name: \(pod.name), namespace: \(ns), labels: {\(labels.joined(separator: ", "))}\(pod.local ? ", annotations: {manx.io/interface: ep\(i)}" : "")}
            spec: {serviceAccountName: \(pick(["default", "robot"])), containers: [{name: c, ports: [\(portYAML)]}]}
            status: {podIP: \(pod.ip)}
            """)
        }
        // Tiers, network sets, then policies.
        for (i, t) in Self.tiers.enumerated() where chance(0.7) {
            docs.append("apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: \(t)}\nspec: {order: \(i * 100 + 100), defaultAction: \(pick(["Deny", "Pass"]))}")
        }
        let tiersPresent = Self.tiers.filter { t in docs.contains { $0.contains("name: \(t)}") } }
        for i in 0..<int(0...2) {
            let global = chance(0.5)
            let nets = (0..<int(1...2)).map { _ in randomNet() }
            docs.append("""
            apiVersion: projectcalico.org/v3
            kind: \(global ? "GlobalNetworkSet" : "NetworkSet")
            metadata: {name: set\(i)\(global ? "" : ", namespace: \(pick(Self.namespaces))"), labels: {kind: \(pick(["partner", "blocked"]))}}
            spec: {nets: [\(nets.joined(separator: ", "))]}
            """)
        }
        // Sometimes a namespace's profile replaces the built-in allow.
        for ns in Self.namespaces where chance(0.15) {
            let ingress = (0..<int(0...2)).map { _ in calicoRule(namespaced: false, allowPass: false) }
            let egress = (0..<int(0...2)).map { _ in calicoRule(namespaced: false, allowPass: false) }
            docs.append("""
            apiVersion: projectcalico.org/v3
            kind: Profile
            metadata: {name: kns.\(ns)}
            spec: {ingress: [\(ingress.joined(separator: ", "))], egress: [\(egress.joined(separator: ", "))], labelsToApply: {zone: \(pick(["a", "b"]))}}
            """)
        }
        for i in 0..<int(1...3) where chance(0.6) { docs.append(kubernetesPolicy(i)) }
        for i in 0..<int(1...5) { docs.append(calicoPolicy(i, tiers: ["default"] + tiersPresent)) }
        yaml = docs.joined(separator: "\n---\n") + "\n"
    }

    mutating func randomNet() -> String {
        let net = pick([
            "10.30.0.0/16", "10.30.\(int(0...2)).0/24", "10.30.\(int(0...2)).\(int(1...4))/32", "10.30.0.0/22",
            "192.0.2.0/24", "198.51.100.\(int(0...255))/32", "0.0.0.0/0", "10.0.0.0/8", "10.30.1.0/30",
        ])
        mentionedNets.append(net)
        return net
    }

    mutating func selector() -> String {
        let atoms = [
            "app == '\(pick(Self.apps))'", "app != '\(pick(Self.apps))'", "has(tier)", "!has(role)",
            "tier in {'1', '2'}", "app not in {'\(pick(Self.apps))'}", "role starts with 'backend'",
            "role ends with 'v2'", "role contains 'end'", "all()", "kind == '\(pick(["partner", "blocked"]))'",
            "projectcalico.org/namespace == '\(pick(Self.namespaces))'",
            "pcns.env == 'prod'", "zone == 'a'",
        ]
        var s = pick(atoms)
        if chance(0.3) { s = "(\(s) \(pick(["&&", "||"])) \(pick(atoms)))" }
        if chance(0.1) { s = "!\(s.hasPrefix("(") ? s : "(\(s))")" }
        return s
    }

    mutating func port() -> String {
        if chance(0.2) { return pick(Self.portNames) }
        let lo = pick(Array(mentionedPorts))
        if chance(0.4) {
            let hi = min(32767, lo + int(0...3000))
            mentionedPorts.insert(hi)
            return "'\(lo):\(hi)'"
        }
        return "\(lo)"
    }

    mutating func entity(namespaced: Bool) -> String {
        var parts: [String] = []
        if chance(0.35) { parts.append("nets: [\(randomNet())]") }
        if chance(0.2) { parts.append("notNets: [\(randomNet())]") }
        if chance(0.5) { parts.append("selector: \"\(selector())\"") }
        if chance(0.2) { parts.append("namespaceSelector: \"\(pick(["env == 'prod'", "has(team)", "all()", "global()", "projectcalico.org/name in {'x', 'z'}"]))\"") }
        if chance(0.15) { parts.append("notSelector: \"\(selector())\"") }
        return parts.joined(separator: ", ")
    }

    mutating func calicoRule(namespaced: Bool, allowPass: Bool = true) -> String {
        var parts = ["action: \(pick(allowPass ? ["Allow", "Allow", "Deny", "Pass", "Log"] : ["Allow", "Deny", "Log"]))"]
        let proto: String? = chance(0.7) ? pick(["TCP", "UDP", "SCTP", "ICMP", "17", "6"]) : nil
        if let proto { parts.append("protocol: \(proto)") }
        if proto == nil && chance(0.2) { parts.append("notProtocol: \(pick(["TCP", "UDP", "ICMP"]))") }
        let hasPorts = ["TCP", "UDP", "SCTP", "17", "6"].contains(proto ?? "")
        if proto == "ICMP" && chance(0.6) {
            parts.append("\(chance(0.7) ? "icmp" : "notICMP"): {type: \(pick([0, 3, 8, 11]))\(chance(0.4) ? ", code: \(pick([0, 1, 3]))" : "")}")
        }
        var dest = entity(namespaced: namespaced)
        if hasPorts && chance(0.6) {
            let ports = (0..<int(1...3)).map { _ in port() }.joined(separator: ", ")
            dest += (dest.isEmpty ? "" : ", ") + "ports: [\(ports)]"
        }
        if hasPorts && chance(0.25) { dest += (dest.isEmpty ? "" : ", ") + "notPorts: [\(port())]" }
        let src = entity(namespaced: namespaced)
        if !src.isEmpty { parts.append("source: {\(src)}") }
        if !dest.isEmpty { parts.append("destination: {\(dest)}") }
        if chance(0.05) { parts.append("ipVersion: 6") }
        return "{" + parts.joined(separator: ", ") + "}"
    }

    mutating func calicoPolicy(_ i: Int, tiers: [String]) -> String {
        let global = chance(0.4)
        var spec: [String] = []
        let tier = pick(tiers)
        if tier != "default" { spec.append("tier: \(tier)") }
        if chance(0.8) { spec.append("order: \(pick([10, 10, 20, 100.5, 1000]))") }
        spec.append("selector: \"\(selector())\"")
        if global && chance(0.3) { spec.append("namespaceSelector: \"env == 'prod'\"") }
        let ingress = (0..<int(0...3)).map { _ in calicoRule(namespaced: !global) }
        let egress = (0..<int(0...3)).map { _ in calicoRule(namespaced: !global) }
        if !ingress.isEmpty { spec.append("ingress: [\(ingress.joined(separator: ", "))]") }
        if !egress.isEmpty { spec.append("egress: [\(egress.joined(separator: ", "))]") }
        if chance(0.5) { spec.append("types: [\(pick(["Ingress", "Egress", "Ingress, Egress"]))]") }
        let name = "\(pick(["alpha", "beta"]))\(i)"
        return """
        apiVersion: projectcalico.org/v3
        kind: \(global ? "GlobalNetworkPolicy" : "NetworkPolicy")
        metadata: {name: \(name)\(global ? "" : ", namespace: \(pick(Self.namespaces))")}
        spec: {\(spec.joined(separator: ", "))}
        """
    }

    mutating func kubernetesPolicy(_ i: Int) -> String {
        func peer(_ g: inout RandomPolicySet) -> String {
            switch g.int(0...3) {
            case 0: return "{podSelector: {matchLabels: {app: \(g.pick(Self.apps))}}}"
            case 1: return "{namespaceSelector: {matchLabels: {env: prod}}, podSelector: {matchExpressions: [{key: tier, operator: \(g.pick(["Exists", "DoesNotExist"]))}]}}"
            case 2: return "{ipBlock: {cidr: 10.30.0.0/16, except: [10.30.\(g.int(0...2)).0/24]}}"
            default: return "{namespaceSelector: {}}"
            }
        }
        func ports(_ g: inout RandomPolicySet) -> String {
            let p = g.pick(["{port: 80}", "{protocol: UDP, port: 53}", "{port: http}", "{protocol: TCP, port: 1000, endPort: 9000}", "{protocol: SCTP}"])
            return "ports: [\(p)]"
        }
        var rules: [String] = []
        for _ in 0..<int(0...2) {
            var parts: [String] = []
            if chance(0.7) { parts.append("from: [\(peer(&self))]") }
            if chance(0.6) { parts.append(ports(&self)) }
            rules.append("{\(parts.joined(separator: ", "))}")
        }
        var egress: [String] = []
        for _ in 0..<int(0...1) {
            egress.append("{to: [\(peer(&self))]\(chance(0.5) ? ", " + ports(&self) : "")}")
        }
        let types = pick(["[Ingress]", "[Ingress, Egress]", "[Egress]"])
        return """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: k\(i), namespace: \(pick(Self.namespaces))}
        spec:
          podSelector: {matchLabels: {app: \(pick(Self.apps))}}
          policyTypes: \(types)
          ingress: [\(rules.joined(separator: ", "))]
          egress: [\(egress.joined(separator: ", "))]
        """
    }

    // MARK: Packets

    struct Probe {
        var endpoint: Int
        var ingress: Bool
        var peer: String
        var proto: UInt8
        var port: UInt16
    }

    mutating func probe() -> Probe {
        let endpoint = int(0...2)
        var peer: String
        switch int(0...9) {
        case 0...4: peer = pick(pods).ip
        case 5, 6:
            if let net = mentionedNets.isEmpty ? nil : pick(mentionedNets) { peer = addressIn(net) } else { peer = "192.0.2.7" }
        case 7: peer = "10.30.\(int(0...3)).\(int(0...255))"
        default: peer = "\(int(1...223)).\(int(0...255)).\(int(0...255)).\(int(1...254))"
        }
        let proto: UInt8 = pick([6, 6, 17, 17, 132, 1, 47])
        var port: UInt16 = 0
        if proto == 1 {
            port = UInt16(pick([0, 3, 8, 11])) << 8 | UInt16(pick([0, 1, 3]))
        } else if proto != 47 {
            let base = pick(Array(mentionedPorts))
            port = UInt16(max(1, min(32767, base + pick([-1, 0, 0, 1]))))
            if chance(0.1) { port = UInt16(int(1...32767)) }
        }
        return Probe(endpoint: endpoint, ingress: chance(0.5), peer: peer, proto: proto, port: port)
    }

    mutating func addressIn(_ cidr: String) -> String {
        let parts = cidr.split(separator: "/")
        let len = Int(parts[1])!
        let base = parts[0].split(separator: ".").reduce(UInt32(0)) { $0 << 8 | UInt32($1)! }
        let span: UInt32 = len == 0 ? .max : (UInt32(1) << UInt32(32 - len)) - 1
        let pickOffset: UInt32 = pick([0, span, span / 2, UInt32.random(in: 0...span, using: &rng)])
        let v = base &+ pickOffset
        return "\(v >> 24).\(v >> 16 & 255).\(v >> 8 & 255).\(v & 255)"
    }
}
