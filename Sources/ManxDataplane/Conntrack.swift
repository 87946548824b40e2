import Glibc
import ManxBPF
import ManxMapLayout
import ManxModel

// The per-endpoint conntrack tables (manx_ct in bpf/include/manx/maps.h)
// as seen from user space: expiry, which the kernel's plain hash tables do
// not do by themselves, and reading them for `bpfctl dump`.

extension manx_ct_value {
    func has(_ flag: UInt32) -> Bool { flags & flag != 0 }

    var tcpClosed: Bool { has(MANX_CT_F_RST) || (has(MANX_CT_F_FIN_ORIG) && has(MANX_CT_F_FIN_REPLY)) }

    /// The idle time after which the entry is dead: manx_ct_timeout_ns.
    func timeoutNanoseconds(proto: UInt8) -> Int64 {
        let seconds: Int32
        if proto == IPProtocol.tcp.number {
            seconds = tcpClosed ? MANX_CT_TIMEOUT_TCP_CLOSED : has(MANX_CT_F_SEEN_REPLY) ? MANX_CT_TIMEOUT_TCP_EST : MANX_CT_TIMEOUT_TCP_SYN
        } else {
            seconds = proto != IPProtocol.udp.number ? MANX_CT_TIMEOUT_OTHER
                : has(MANX_CT_F_SEEN_REPLY) ? MANX_CT_TIMEOUT_UDP : MANX_CT_TIMEOUT_UDP_UNREPLIED
        }
        return Int64(seconds) * 1_000_000_000
    }

    /// Signed, as in the programs: a CPU may stamp last_seen after `now` was read.
    func expired(proto: UInt8, now: UInt64) -> Bool {
        Int64(bitPattern: now &- last_seen_ns) > timeoutNanoseconds(proto: proto)
    }
}

extension Dataplane {
    /// The conntrack table of the endpoint on that interface.
    public func conntrackTable(ifindex: Int32) throws(BPFError) -> BPFMap? {
        guard let ep = endpoints[ifindex] else { return nil }
        return try maps.conntrack.inner(at: ep.value.id)
    }

    /// Deletes the entries idle past their timeout from every endpoint's
    /// table (a full table refuses new flows, so this is what makes room);
    /// returns how many went. Each entry is read again just before its
    /// deletion, so a flow that a packet has just refreshed stays.
    ///
    /// A table is read only if its manx_ct_live mark is set. The mark is
    /// cleared before the table is read and set again if entries remain;
    /// a flow created meanwhile sets it itself (after its entry exists).
    /// So a clear mark always means an empty table.
    @discardableResult
    public func expireConntrack(now: UInt64) throws(BPFError) -> Int {
        var removed = 0
        for ep in endpoints.values {
            guard try mayHoldEntries(ep.value.id), let table = try maps.conntrack.inner(at: ep.value.id) else { continue }
            try maps.conntrackLive.update(ep.value.id, UInt32(0))
            let entries = try table.entries(as: (manx_ct_key, manx_ct_value).self)
            var left = entries.count
            for (key, value) in entries where value.expired(proto: key.proto, now: now) {
                guard let fresh = try table.lookup(key, as: manx_ct_value.self), fresh.expired(proto: key.proto, now: now) else { continue }
                if try table.delete(key) {
                    removed += 1
                    left -= 1
                }
            }
            if left > 0 { try maps.conntrackLive.update(ep.value.id, UInt32(1)) }
        }
        return removed
    }

    /// Whether the endpoint's table may hold entries (its manx_ct_live mark).
    func mayHoldEntries(_ id: UInt32) throws(BPFError) -> Bool {
        try maps.conntrackLive.lookup(id, as: UInt32.self).map { $0 != 0 } ?? true
    }
}

extension Dataplane {
    /// Revokes the approvals of flows whose peer now has another identity
    /// (a relabelled pod, a CIDR a new rule splits off): the entry keeps its
    /// flow and role, but records MANX_RULESET_REVOKED, so the next packet
    /// is judged again in the flow's original direction. Called once the
    /// new generation is in force and no program runs with the old one.
    /// Returns how many entries were revoked.
    func revokeChangedPeers(of kept: [manx_endpoint], before: [CIDR: manx_ipcache_value],
                            after: [CIDR: manx_ipcache_value]) throws(BPFError) -> Int {
        var revoked = 0
        var changed: [UInt32: Bool] = [:] // by peer address: many flows share a peer
        for ep in kept {
            guard try mayHoldEntries(ep.id), let table = try maps.conntrack.inner(at: ep.id) else { continue }
            for (key, value) in try table.entries(as: (manx_ct_key, manx_ct_value).self) {
                guard value.ruleset != MANX_RULESET_ALLOW_ALL, value.ruleset < MANX_RULESET_RESERVED else { continue }
                let peer = key.addr_a == ep.addr ? key.addr_b : key.addr_a
                let moved = changed[peer] ?? {
                    let address = IPv4Address(UInt32(bigEndian: peer))
                    let moved = Self.identity(of: address, in: before) != Self.identity(of: address, in: after)
                    changed[peer] = moved
                    return moved
                }()
                guard moved else { continue }
                // Re-read, so the entry's latest counters and flags are kept; a
                // flow deleted meanwhile needs nothing.
                guard var fresh = try table.lookup(key, as: manx_ct_value.self) else { continue }
                fresh.ruleset = MANX_RULESET_REVOKED
                do {
                    try table.update(key, fresh, flags: .exist)
                    revoked += 1
                } catch where error.errno == ENOENT {}
            }
        }
        return revoked
    }

    /// The identity the programs see for an address: longest prefix, else world.
    static func identity(of address: IPv4Address, in cache: [CIDR: manx_ipcache_value]) -> UInt32 {
        for length in stride(from: 32, through: 0, by: -1) {
            if let v = cache[CIDR(address, length)] { return v.identity }
        }
        return UInt32(MANX_IDENTITY_WORLD)
    }
}
