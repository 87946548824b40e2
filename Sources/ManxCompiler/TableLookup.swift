import ManxModel

extension CompiledState {
    /// What the kernel's two lookups will answer, computed in Swift the same
    /// way (longest-prefix match on the ipcache, then on the rule set). For
    /// tests and `bpfctl`-style explanations; the fast path is in BPF.
    public func decide(ruleset: UInt32, peer: IPv4Address, proto: UInt8, port: UInt16) -> Decision {
        if ruleset == 0 { return Decision(.allow, ReservedRule.none) }
        let identity = ipcache
            .filter { $0.cidr.contains(peer) }
            .max { $0.cidr.prefixLength < $1.cidr.prefixLength }?.identity ?? ReservedIdentity.world
        guard let entries = rulesets[ruleset] else { return Decision(.deny, ReservedRule.defaultDeny) }
        var best: (Int, Decision)?
        for e in entries {
            let length: Int
            if let id = e.identity {
                guard id == identity else { continue }
                if let p = e.proto {
                    guard p == proto else { continue }
                    let shift = 16 - e.portBits
                    guard e.portBits == 0 || (UInt32(port) >> shift) == (UInt32(e.port) >> shift) else { continue }
                    length = 80 + e.portBits
                } else {
                    length = 64
                }
            } else {
                length = 32
            }
            if best == nil || length > best!.0 { best = (length, e.decision) }
        }
        return best?.1 ?? Decision(.deny, ReservedRule.defaultDeny)
    }

    public func endpoint(_ workload: String) -> CompiledEndpoint? { endpoints.first { $0.workload == workload } }
}
