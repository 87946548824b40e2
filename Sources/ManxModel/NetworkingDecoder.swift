import ManxSelectors

/// Pod networking kinds: projectcalico.org/v3 IPPool, Node,
/// FelixConfiguration and WorkloadEndpoint, and manx.io/v1 IPAMBlock.
/// IPPool, IPAMBlock and WorkloadEndpoint are checked strictly. Node and
/// FelixConfiguration carry many fields Manx has no use for: Node ignores a
/// few known ones, FelixConfiguration ignores every field but the two MTUs.
enum NetworkingDecoder {
    // MARK: IPPool

    static let poolSpecFields: Set<String> = [
        "cidr", "blockSize", "ipipMode", "vxlanMode", "natOutgoing", "disabled", "nodeSelector",
        // Accepted and ignored: Manx does no BGP, and pools are for workloads.
        "allowedUses", "disableBGPExport",
    ]

    static func ipPool(_ top: [String: YNode], file: String, ctx: DecodeContext) -> IPPool? {
        guard let meta = ResourceDecoder.metadata(top, kind: "IPPool", namespaced: false, ctx: ctx) else { return nil }
        CalicoDecoder.checkTopLevel(top, ctx: ctx)
        guard let specNode = top["spec"] else { ctx.fail("spec", "missing"); return nil }
        guard let spec = specNode.fields(allowed: poolSpecFields) else { return nil }
        guard let cidrNode = spec["cidr"] else { ctx.fail(specNode.child("cidr"), "missing"); return nil }
        guard let cidr = exactCIDR(cidrNode) else { return nil }
        var pool = IPPool(name: meta.name, cidr: cidr,
                          ref: ResourceRef(kind: "IPPool", namespace: nil, name: meta.name, file: file))
        if let node = spec["blockSize"], let size = node.integer(in: 20...32, what: "blockSize") {
            if size < cidr.prefixLength {
                ctx.fail(node.path, "blockSize \(size) is larger than the pool \(cidr) (must be at least its prefix length \(cidr.prefixLength))")
            }
            pool.blockSize = size
        }
        if let node = spec["ipipMode"] { pool.ipipMode = encapMode(node) ?? .never }
        if let node = spec["vxlanMode"] {
            pool.vxlanMode = encapMode(node) ?? .never
            if pool.ipipMode != .never && pool.vxlanMode != .never {
                ctx.fail(node.path, "cannot enable both IPIP and VXLAN on the same pool (ipipMode is \(pool.ipipMode.rawValue))")
            }
        }
        if let node = spec["natOutgoing"] { pool.natOutgoing = node.boolean() ?? false }
        if let node = spec["disabled"] { pool.disabled = node.boolean() ?? false }
        if let node = spec["nodeSelector"] { pool.nodeSelector = CalicoDecoder.selector(node) ?? .all }
        if let node = spec["disableBGPExport"] { _ = node.boolean() }
        if let node = spec["allowedUses"], let items = node.list {
            var uses: Set<String> = []
            for item in items {
                guard let text = item.string else { continue }
                guard text == "Workload" || text == "Tunnel" else {
                    ctx.fail(item.path, "allowedUses entries must be Workload or Tunnel, got '\(text)'")
                    continue
                }
                uses.insert(text)
            }
            if !uses.contains("Workload") { ctx.fail(node.path, "a pool Manx uses must allow Workload") }
        }
        return pool
    }

    static func encapMode(_ node: YNode) -> EncapMode? {
        guard let text = node.string else { return nil }
        guard let mode = EncapMode(rawValue: text) else {
            node.ctx.fail(node.path, "must be Always, CrossSubnet or Never, got '\(text)'")
            return nil
        }
        return mode
    }

    /// A CIDR whose host bits are clear, as Calico requires for pools and blocks.
    static func exactCIDR(_ node: YNode) -> CIDR? {
        guard let text = node.string else { return nil }
        switch CIDR.parse(text) {
        case .failure(let f):
            node.ctx.fail(node.path, f.reason)
            return nil
        case .success(let cidr):
            let written = IPv4Address(text.split(separator: "/", omittingEmptySubsequences: false)[0])
            if written != cidr.address {
                node.ctx.fail(node.path, "'\(text)' has host bits set (the network is \(cidr))")
                return nil
            }
            return cidr
        }
    }

    // MARK: Node

    static let nodeSpecFields: Set<String> = ["bgp", "ipv4VXLANTunnelAddr", "orchRefs", "addresses"]
    static let nodeBGPFields: Set<String> = [
        "ipv4Address", "ipv6Address", "ipv4IPIPTunnelAddr", "asNumber", "routeReflectorClusterID",
    ]

    static func node(_ top: [String: YNode], file: String, ctx: DecodeContext) -> ClusterNode? {
        guard let meta = ResourceDecoder.metadata(top, kind: "Node", namespaced: false, ctx: ctx) else { return nil }
        for (key, node) in top where !["apiVersion", "kind", "metadata", "spec", "status"].contains(key) {
            ctx.fail(node.path, "unknown field")
        }
        guard let specNode = top["spec"] else { ctx.fail("spec", "missing"); return nil }
        guard let spec = specNode.fields(allowed: nodeSpecFields) else { return nil }
        guard let bgpNode = spec["bgp"] else {
            ctx.fail(specNode.child("bgp"), "missing (spec.bgp.ipv4Address gives the node's address and subnet)")
            return nil
        }
        guard let bgp = bgpNode.fields(allowed: nodeBGPFields) else { return nil }
        guard let addressNode = bgp["ipv4Address"] else { ctx.fail(bgpNode.child("ipv4Address"), "missing"); return nil }
        guard let text = addressNode.string else { return nil }
        guard text.contains("/") else {
            ctx.fail(addressNode.path, "'\(text)' needs a prefix length, e.g. \(text)/24, to give the node's subnet")
            return nil
        }
        let addressPart = text.split(separator: "/", omittingEmptySubsequences: false)[0]
        switch CIDR.parse(text) {
        case .failure(let f):
            ctx.fail(addressNode.path, f.reason)
            return nil
        case .success(let subnet):
            guard let address = IPv4Address(addressPart) else { return nil }
            return ClusterNode(name: meta.name, labels: meta.labels, address: address, subnet: subnet,
                               ref: ResourceRef(kind: "Node", namespace: nil, name: meta.name, file: file))
        }
    }

    // MARK: FelixConfiguration

    static func felixConfiguration(_ top: [String: YNode], file: String, ctx: DecodeContext) -> FelixConfiguration? {
        guard let meta = ResourceDecoder.metadata(top, kind: "FelixConfiguration", namespaced: false, ctx: ctx) else { return nil }
        CalicoDecoder.checkTopLevel(top, ctx: ctx)
        if meta.name != "default" && !(meta.name.hasPrefix("node.") && meta.name.count > 5) {
            ctx.fail("metadata.name", "a FelixConfiguration is named 'default' or 'node.<nodename>', got '\(meta.name)'")
        }
        // Felix has hundreds of settings: only the ones Manx uses are read.
        let spec = top["spec"]?.fields() ?? [:]
        let mtu = { (key: String) -> Int? in spec[key]?.integer(in: 576...9000, what: key) }
        return FelixConfiguration(name: meta.name, ipipMTU: mtu("ipipMTU"), vxlanMTU: mtu("vxlanMTU"),
                                  ref: ResourceRef(kind: "FelixConfiguration", namespace: nil, name: meta.name, file: file))
    }

    // MARK: IPAMBlock

    static func ipamBlock(_ top: [String: YNode], file: String, ctx: DecodeContext) -> IPAMBlock? {
        guard let meta = ResourceDecoder.metadata(top, kind: "IPAMBlock", namespaced: false, ctx: ctx) else { return nil }
        CalicoDecoder.checkTopLevel(top, ctx: ctx)
        guard let specNode = top["spec"] else { ctx.fail("spec", "missing"); return nil }
        guard let spec = specNode.fields(allowed: ["cidr", "pool", "node", "allocations"]) else { return nil }
        guard let cidrNode = spec["cidr"] else { ctx.fail(specNode.child("cidr"), "missing"); return nil }
        guard let cidr = exactCIDR(cidrNode) else { return nil }
        if meta.name != IPAMBlock.resourceName(cidr) {
            ctx.fail("metadata.name", "the block \(cidr) must be named '\(IPAMBlock.resourceName(cidr))', got '\(meta.name)'")
        }
        let pool = requiredName(spec["pool"], path: specNode.child("pool"), ctx: ctx)
        let owner = requiredName(spec["node"], path: specNode.child("node"), ctx: ctx)
        var allocations: [IPAMBlock.Allocation] = []
        var seen: [IPv4Address: Int] = [:]
        for (index, item) in (spec["allocations"]?.list ?? []).enumerated() {
            guard let f = item.fields(allowed: ["address", "handle", "workload", "node"]) else { continue }
            guard let addressNode = f["address"] else { ctx.fail(item.child("address"), "missing"); continue }
            guard let text = addressNode.string else { continue }
            guard let address = IPv4Address(text) else {
                ctx.fail(addressNode.path, "'\(text)' is not an IPv4 address")
                continue
            }
            guard cidr.contains(address) else {
                ctx.fail(addressNode.path, "\(address) is outside the block \(cidr)")
                continue
            }
            if let first = seen[address] {
                ctx.fail(addressNode.path, "\(address) is already allocated by allocations[\(first)]")
                continue
            }
            seen[address] = index
            guard let handle = requiredName(f["handle"], path: item.child("handle"), ctx: ctx),
                  let node = requiredName(f["node"], path: item.child("node"), ctx: ctx) else { continue }
            allocations.append(IPAMBlock.Allocation(address: address, handle: handle, workload: f["workload"]?.string ?? "", node: node))
        }
        guard let pool, let owner else { return nil }
        return IPAMBlock(cidr: cidr, pool: pool, node: owner, allocations: allocations.sorted { $0.address < $1.address },
                         ref: ResourceRef(kind: "IPAMBlock", namespace: nil, name: meta.name, file: file))
    }

    /// A required non-empty string field.
    static func requiredName(_ node: YNode?, path: String, ctx: DecodeContext) -> String? {
        guard let node else { ctx.fail(path, "missing"); return nil }
        guard let text = node.string else { return nil }
        guard !text.isEmpty else { ctx.fail(path, "must not be empty"); return nil }
        return text
    }

    // MARK: WorkloadEndpoint

    static let endpointSpecFields: Set<String> = [
        "node", "orchestrator", "pod", "workload", "endpoint", "containerID", "interfaceName", "ipNetworks", "mac", "profiles",
    ]

    static func workloadEndpoint(_ top: [String: YNode], file: String, ctx: DecodeContext) -> WorkloadEndpoint? {
        guard let meta = ResourceDecoder.metadata(top, kind: "WorkloadEndpoint", namespaced: true, ctx: ctx) else { return nil }
        CalicoDecoder.checkTopLevel(top, ctx: ctx)
        guard let specNode = top["spec"] else { ctx.fail("spec", "missing"); return nil }
        guard let spec = specNode.fields(allowed: endpointSpecFields) else { return nil }
        let node = requiredName(spec["node"], path: specNode.child("node"), ctx: ctx)
        var orchestrator = Orchestrator.k8s
        if let o = spec["orchestrator"], let text = o.string {
            if let known = Orchestrator(rawValue: text) { orchestrator = known } else { ctx.fail(o.path, "orchestrator must be k8s or cni, got '\(text)'") }
        }
        // A pod names its Pod; any other runtime's container its workload.
        let (own, other) = orchestrator == .k8s ? ("pod", "workload") : ("workload", "pod")
        let pod = requiredName(spec[own], path: specNode.child(own), ctx: ctx)
        if spec[other] != nil { ctx.fail(specNode.child(other), "an endpoint of orchestrator \(orchestrator.rawValue) names its \(own) in spec.\(own), not spec.\(other)") }
        var profiles: [String] = []
        if let p = spec["profiles"] {
            if orchestrator == .k8s {
                ctx.fail(p.path, "a Kubernetes endpoint's profiles are its namespace's and service account's (kns., ksa.); spec.profiles is for orchestrator cni")
            } else if let items = p.list {
                for item in items {
                    guard let text = item.string else { continue }
                    if let reason = ResourceDecoder.validateDNSName(text) { ctx.fail(item.path, reason) } else { profiles.append(text) }
                }
            }
        }
        let containerID = requiredName(spec["containerID"], path: specNode.child("containerID"), ctx: ctx)
        var endpoint = "eth0"
        if let e = spec["endpoint"], let text = e.string {
            if let reason = WorkloadEndpoint.interfaceNameProblem(text) { ctx.fail(e.path, reason) } else { endpoint = text }
        }
        var interface: String? = nil
        if let i = spec["interfaceName"] {
            if let text = i.string {
                if let reason = WorkloadEndpoint.interfaceNameProblem(text) { ctx.fail(i.path, reason) } else { interface = text }
            }
        } else {
            ctx.fail(specNode.child("interfaceName"), "missing")
        }
        var address: IPv4Address? = nil
        if let n = spec["ipNetworks"], let items = n.list {
            if items.count != 1 {
                ctx.fail(n.path, "exactly one IPv4 /32 is supported, got \(items.count) entries")
            } else if let text = items[0].string {
                if text.contains(":") {
                    ctx.fail(items[0].path, "'\(text)' is IPv6; Manx supports one IPv4 address per endpoint")
                } else {
                    switch CIDR.parse(text) {
                    case .failure(let f): ctx.fail(items[0].path, f.reason)
                    case .success(let c) where c.prefixLength != 32:
                        ctx.fail(items[0].path, "'\(text)' must be a single address (/32)")
                    case .success(let c): address = c.address
                    }
                }
            }
        } else if spec["ipNetworks"] == nil {
            ctx.fail(specNode.child("ipNetworks"), "missing")
        }
        var mac: String? = nil
        if let m = spec["mac"], let text = m.string {
            if isMAC(text) { mac = text.lowercased() } else { ctx.fail(m.path, "'\(text)' is not a MAC address (six hex pairs separated by ':')") }
        }
        guard let node, let pod, let containerID, let interface, let address else { return nil }
        let expected = WorkloadEndpoint.resourceName(node: node, orchestrator: orchestrator, pod: pod, endpoint: endpoint)
        if meta.name != expected {
            ctx.fail("metadata.name", "the endpoint of \(own) \(pod) on node \(node) must be named '\(expected)', got '\(meta.name)'")
        }
        var wep = WorkloadEndpoint(namespace: meta.namespace!, name: meta.name, pod: pod, node: node, containerID: containerID,
                                   interfaceName: interface, address: address, mac: mac,
                                   ref: ResourceRef(kind: "WorkloadEndpoint", namespace: meta.namespace, name: meta.name, file: file))
        wep.endpoint = endpoint
        wep.orchestrator = orchestrator
        wep.profiles = profiles
        // A pod's labels are its Pod's; another runtime's are the endpoint's.
        if orchestrator == .cni { wep.labels = meta.labels }
        return wep
    }

    static func isMAC(_ s: String) -> Bool {
        let parts = s.split(separator: ":", omittingEmptySubsequences: false)
        return parts.count == 6 && parts.allSatisfy { $0.count == 2 && $0.allSatisfy(\.isHexDigit) }
    }
}

extension YNode {
    /// true or false, unquoted or quoted.
    func boolean() -> Bool? {
        guard let s = node.scalar else { ctx.fail(path, "expected true or false, got \(describe)"); return nil }
        switch s.string {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default:
            ctx.fail(path, "expected true or false, got \(describe)")
            return nil
        }
    }
}
