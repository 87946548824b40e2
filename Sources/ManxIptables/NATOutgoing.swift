import ManxModel

/// natOutgoing: traffic from a pool with `natOutgoing: true` to an address
/// outside every pool leaves the node with the node's address (SNAT by
/// MASQUERADE in the kernel's NAT table; conntrack takes replies back).
///
/// The BPF programs hand such packets to the kernel's routing, so the NAT
/// is the kernel's; Manx owns one chain, `MANX-NAT-OUTGOING`, replaced in
/// one iptables-restore transaction, and one jump from POSTROUTING.
public enum NATOutgoing {
    public static let chain = "MANX-NAT-OUTGOING"

    /// The chain's rules: every pool destination returns first, then each
    /// natOutgoing pool source is masqueraded.
    public static func rules(pools: [CIDR], natPools: [CIDR]) -> [String] {
        guard !natPools.isEmpty else { return [] }
        return pools.map { "-A \(chain) -d \($0) -j RETURN" }
            + natPools.map { "-A \(chain) -s \($0) -j MASQUERADE" }
    }

    /// Programs the chain (empty when no pool asks for NAT).
    public static func apply(pools: [CIDR], natPools: [CIDR], backend: IptablesDataplane.Backend = .nft) throws {
        let restore = ["*nat", ":\(chain) - [0:0]"] + rules(pools: pools, natPools: natPools) + ["COMMIT"]
        try IptablesDataplane.execute([backend.restore, "--noflush"], input: restore.joined(separator: "\n") + "\n")
        let jump = ["POSTROUTING", "-j", chain]
        if (try? IptablesDataplane.execute([backend.iptables, "-t", "nat", "-C"] + jump)) == nil {
            try IptablesDataplane.execute([backend.iptables, "-t", "nat", "-A"] + jump)
        }
    }

    public static func remove(backend: IptablesDataplane.Backend = .nft) {
        _ = try? IptablesDataplane.execute([backend.iptables, "-t", "nat", "-D", "POSTROUTING", "-j", chain])
        _ = try? IptablesDataplane.execute([backend.iptables, "-t", "nat", "-F", chain])
        _ = try? IptablesDataplane.execute([backend.iptables, "-t", "nat", "-X", chain])
    }
}
