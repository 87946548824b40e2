// Cross-resource checks of the pod networking kinds, and how workload
// endpoints give pods their address, node and interface.

extension ResourceSet {
    /// Pools must not overlap (Calico rejects that), blocks must not overlap,
    /// no address may be allocated twice, and no two workload endpoints may
    /// share an address or a pod.
    func checkNetworking() -> [ValidationError] {
        var errors: [ValidationError] = []
        func fail(_ ref: ResourceRef, _ field: String, _ reason: String) {
            errors.append(ValidationError(file: ref.file, resource: ref.description, field: field, reason: reason))
        }

        let pools = ipPools.values.sorted { ($0.cidr, $0.name) < ($1.cidr, $1.name) }
        for (i, pool) in pools.enumerated() {
            for earlier in pools[..<i] where earlier.cidr.contains(pool.cidr) || pool.cidr.contains(earlier.cidr) {
                fail(pool.ref, "spec.cidr", "\(pool.cidr) overlaps IPPool \(earlier.name) (\(earlier.cidr)); pools must not overlap")
            }
        }

        // Sorted by start address, then widest first: a block overlaps an
        // earlier one exactly when it starts before the furthest end so far.
        let blocks = ipamBlocks.values.sorted { $0.cidr < $1.cidr }
        var widest: IPAMBlock? = nil
        var holders: [IPv4Address: IPAMBlock] = [:]
        for block in blocks {
            if let w = widest, w.cidr.contains(block.cidr.address) {
                fail(block.ref, "spec.cidr", "\(block.cidr) overlaps the IPAM block \(w.cidr)")
            }
            if widest.map({ block.cidr.lastAddress > $0.cidr.lastAddress }) ?? true { widest = block }
            for (i, a) in block.allocations.enumerated() {
                if let other = holders[a.address] {
                    fail(block.ref, "spec.allocations[\(i)].address",
                         "\(a.address) is also allocated in the IPAM block \(other.cidr)")
                } else {
                    holders[a.address] = block
                }
            }
        }

        var byAddress: [IPv4Address: WorkloadEndpoint] = [:]
        var byPod: [String: WorkloadEndpoint] = [:]
        for wep in workloadEndpoints.values.sorted(by: { $0.ref < $1.ref }) {
            if let other = byAddress[wep.address] {
                fail(wep.ref, "spec.ipNetworks[0]", "\(wep.address) is also the address of WorkloadEndpoint \(other.ref.qualifiedName)")
            } else {
                byAddress[wep.address] = wep
            }
            if let other = byPod[wep.podKey] {
                fail(wep.ref, "spec.pod", "pod \(wep.podKey) already has WorkloadEndpoint \(other.name); Manx supports one per pod")
            } else {
                byPod[wep.podKey] = wep
            }
        }
        errors += checkWorkloadInterfaces(endpoints: byPod)
        return errors
    }

    /// Whether some pod's or endpoint's interface is invalid, or claimed
    /// by two of them on one node (false means `checkWorkloadInterfaces`
    /// finds nothing); in any order.
    private func interfaceClaimsMayConflict(endpoints: [String: WorkloadEndpoint]) -> Bool {
        var nodes: [String: [String?]] = [:]
        func claim(_ name: String, _ node: String?) -> Bool {
            if name == "lo" || WorkloadEndpoint.interfaceNameProblem(name) != nil { return true }
            if let others = nodes[name], others.contains(where: { $0 == nil || node == nil || $0 == node }) { return true }
            nodes[name, default: []].append(node)
            return false
        }
        for ep in endpoints.values where claim(ep.interfaceName, ep.node) { return true }
        for (key, pod) in pods where endpoints[key] == nil {
            if let name = pod.interface, claim(name, pod.nodeName) { return true }
        }
        return false
    }

    /// A workload interface is where the workload programs go, and they
    /// drop whatever is not the endpoint's: it must be a valid Linux name,
    /// not the loopback, and no other endpoint's on the same node (a pod
    /// without a node is on every node).
    private func checkWorkloadInterfaces(endpoints: [String: WorkloadEndpoint]) -> [ValidationError] {
        // Almost always nothing is wrong: found without sorting (the sort
        // below, which only decides which claim an error names, was most
        // of an assemble with a few hundred pods).
        if !interfaceClaimsMayConflict(endpoints: endpoints) { return [] }
        struct Claim { var node: String?; var ref: ResourceRef; var field: String }
        var errors: [ValidationError] = []
        var claims: [String: [Claim]] = [:]
        let annotationField = "metadata.annotations.\(Pod.interfaceAnnotation)"
        // Endpoints first: a pod's annotation is what conflicts with them.
        var all: [(name: String, claim: Claim)] = endpoints.values.sorted { $0.ref < $1.ref }
            .map { ($0.interfaceName, Claim(node: $0.node, ref: $0.ref, field: "spec.interfaceName")) }
        for pod in pods.values.sorted(by: { $0.ref < $1.ref }) where endpoints[pod.key] == nil {
            guard let name = pod.interface else { continue }
            if let reason = WorkloadEndpoint.interfaceNameProblem(name) {
                errors.append(ValidationError(file: pod.ref.file, resource: pod.ref.description, field: annotationField, reason: reason))
                continue
            }
            all.append((name, Claim(node: pod.nodeName, ref: pod.ref, field: annotationField)))
        }
        for (name, claim) in all {
            if name == "lo" {
                errors.append(ValidationError(file: claim.ref.file, resource: claim.ref.description, field: claim.field,
                                              reason: "'lo' is not a workload interface"))
                continue
            }
            if let other = claims[name]?.first(where: { $0.node == nil || claim.node == nil || $0.node == claim.node }) {
                errors.append(ValidationError(file: claim.ref.file, resource: claim.ref.description, field: claim.field,
                                              reason: "interface \(name) is already the interface of \(other.ref.description)"))
            }
            claims[name, default: []].append(claim)
        }
        return errors
    }

    /// A workload endpoint gives its pod the address, the node and the
    /// host-side interface. A pod with an endpoint but no Pod resource is
    /// synthesised (no labels, no ports, service account "default"), so the
    /// endpoint is still enforced. Pods without an endpoint keep what their
    /// own resource says (status.podIP and the interface annotation). A
    /// `cni` endpoint is its workload whole: its labels and profiles, no
    /// Pod resource.
    mutating func mergeWorkloadEndpoints() {
        for wep in workloadEndpoints.values {
            var pod = wep.orchestrator == .cni
                ? Pod(namespace: wep.namespace, name: wep.pod, labels: wep.labels, annotations: [:], ip: nil, ports: [],
                      serviceAccount: "", nodeName: nil, ref: wep.ref, orchestrator: .cni, profiles: wep.profiles)
                : pods[wep.podKey] ?? Pod(namespace: wep.namespace, name: wep.pod, labels: [:], annotations: [:], ip: nil,
                                          ports: [], serviceAccount: "default", nodeName: nil, ref: wep.ref)
            pod.ip = wep.address
            pod.nodeName = wep.node
            pod.annotations[Pod.interfaceAnnotation] = wep.interfaceName
            pods[wep.podKey] = pod
        }
    }
}

extension CIDR {
    /// The last address of the prefix (its broadcast address).
    public var lastAddress: IPv4Address { IPv4Address(address.value | ~CIDR.mask(prefixLength)) }

    /// How many addresses the prefix holds.
    public var size: UInt64 { UInt64(1) << UInt64(32 - prefixLength) }
}
