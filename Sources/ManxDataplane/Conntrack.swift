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
    @discardableResult
    public func expireConntrack(now: UInt64) throws(BPFError) -> Int {
        var removed = 0
        for ep in endpoints.values {
            guard let table = try maps.conntrack.inner(at: ep.value.id) else { continue }
            for (key, value) in try table.entries(as: (manx_ct_key, manx_ct_value).self) where value.expired(proto: key.proto, now: now) {
                guard let fresh = try table.lookup(key, as: manx_ct_value.self), fresh.expired(proto: key.proto, now: now) else { continue }
                if try table.delete(key) { removed += 1 }
            }
        }
        return removed
    }
}
