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
    ///
    /// While manx_ct_peers cannot be trusted (after a start, or once the
    /// programs failed to add a peer), the pass also adds the peers of the
    /// revocable entries it keeps, and the map is trusted from then on if
    /// they all fit (see `revokeChangedPeers`).
    @discardableResult
    public func expireConntrack(now: UInt64) throws(BPFError) -> Int {
        var removed = 0
        // What the programs had missed before this pass read any table:
        // a peer they miss later counts after it.
        let missed = try peersMissed()
        let indexing = peerIndexBaseline != missed && programsAreOurs
        // A program that started before the check above may still be of
        // the predecessor: those end first.
        if indexing { try waitForRunningPrograms() }
        var peers = Set<UInt32>()
        for ep in endpoints.values {
            guard try mayHoldEntries(ep.value.id), let table = try maps.conntrack.inner(at: ep.value.id) else { continue }
            try maps.conntrackLive.update(ep.value.id, UInt32(0))
            let entries = try table.entries(as: (manx_ct_key, manx_ct_value).self)
            var left = entries.count
            for (key, value) in entries {
                if value.expired(proto: key.proto, now: now),
                   let fresh = try table.lookup(key, as: manx_ct_value.self), fresh.expired(proto: key.proto, now: now),
                   try table.delete(key) {
                    removed += 1
                    left -= 1
                } else if indexing && Self.revocable(value) {
                    peers.insert(Self.peer(of: key, endpoint: ep.value))
                }
            }
            if left > 0 { try maps.conntrackLive.update(ep.value.id, UInt32(1)) }
        }
        if indexing {
            var complete = true
            for peer in peers where try maps.conntrackPeers.lookup(peer, as: UInt32.self) == nil {
                do {
                    try maps.conntrackPeers.update(peer, UInt32(1), flags: .noExist)
                } catch where error.errno == EEXIST {
                } catch {
                    complete = false // full: tables are read for every revocation
                    break
                }
            }
            peerIndexBaseline = complete ? missed : nil
        }
        return removed
    }

    /// How many peers the programs could not add to manx_ct_peers.
    func peersMissed() throws(BPFError) -> UInt64 {
        try maps.conntrackPeersMissed.lookup(UInt32(0), as: UInt64.self) ?? 0
    }

    /// Whether a rule set approved the entry: "allow all" (no policy) and
    /// the reserved values have nothing revocation could take back.
    static func revocable(_ value: manx_ct_value) -> Bool {
        value.ruleset != MANX_RULESET_ALLOW_ALL && value.ruleset < MANX_RULESET_RESERVED
    }

    /// The far end of a flow of the endpoint (network order).
    static func peer(of key: manx_ct_key, endpoint: manx_endpoint) -> UInt32 {
        key.addr_a == endpoint.addr ? key.addr_b : key.addr_a
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
    /// Returns how many entries were revoked, and how many tables were read.
    ///
    /// When every address whose identity changed is one address (a /32:
    /// pods come and go, and are relabelled), none of them is in
    /// manx_ct_peers, and the map is trusted, no table holds a flow with
    /// them and none is read: reading a table walks all of its buckets
    /// (a new pod at 90 endpoints cost 12 ms in the kernel and 6 ms here).
    func revokeChangedPeers(of kept: [manx_endpoint], before: [CIDR: manx_ipcache_value],
                            after: [CIDR: manx_ipcache_value]) throws(BPFError) -> (revoked: Int, tablesRead: Int) {
        if try !mayHoldFlows(with: Self.changedPrefixes(before, after)) { return (0, 0) }
        var revoked = 0, tablesRead = 0
        var changed: [UInt32: Bool] = [:] // by peer address: many flows share a peer
        for ep in kept {
            guard try mayHoldEntries(ep.id), let table = try maps.conntrack.inner(at: ep.id) else { continue }
            tablesRead += 1
            for (key, value) in try table.entries(as: (manx_ct_key, manx_ct_value).self) {
                guard Self.revocable(value) else { continue }
                let peer = Self.peer(of: key, endpoint: ep)
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
        return (revoked, tablesRead)
    }

    /// The prefixes whose identity differs between two ipcaches (added,
    /// removed or changed); nil as soon as one is wider than one address.
    /// An address whose longest prefix is none of them keeps its identity.
    static func changedPrefixes(_ before: [CIDR: manx_ipcache_value], _ after: [CIDR: manx_ipcache_value]) -> [CIDR]? {
        var changed: [CIDR] = []
        for (cidr, value) in after where before[cidr]?.identity != value.identity {
            guard cidr.prefixLength == 32 else { return nil }
            changed.append(cidr)
        }
        for cidr in before.keys where after[cidr] == nil {
            guard cidr.prefixLength == 32 else { return nil }
            changed.append(cidr)
        }
        return changed
    }

    /// Whether some table may hold a flow with one of these addresses
    /// (true when not known: nil, or an untrusted index).
    func mayHoldFlows(with addresses: [CIDR]?) throws(BPFError) -> Bool {
        guard let addresses else { return true }
        // No identity changed: no approval is out of date.
        if addresses.isEmpty { return false }
        guard let baseline = peerIndexBaseline, try peersMissed() == baseline else { return true }
        for cidr in addresses where try maps.conntrackPeers.lookup(cidr.address.networkOrder, as: UInt32.self) != nil {
            return true
        }
        return false
    }

    /// The identity the programs see for an address: longest prefix, else world.
    static func identity(of address: IPv4Address, in cache: [CIDR: manx_ipcache_value]) -> UInt32 {
        for length in stride(from: 32, through: 0, by: -1) {
            if let v = cache[CIDR(address, length)] { return v.identity }
        }
        return UInt32(MANX_IDENTITY_WORLD)
    }
}
