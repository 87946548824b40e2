import ManxModel
import ManxSelectors

/// The pools, nodes and blocks IPAM decides from, and the decisions
/// themselves (pure: the caller reads and writes the datastore).
///
/// Choices, following Calico IPAM where it applies:
/// - Within a block every address is handed out, except the pool's own
///   network address (in the pool's first block) and broadcast address (in
///   its last block), so no pod ever gets an address that some hosts treat
///   as a broadcast. With blockSize equal to the pool's prefix both go.
/// - Strict affinity: a dynamic assignment uses only blocks claimed by the
///   requesting node, and claims a new block when they are full. Calico
///   borrows addresses from other nodes' blocks when no block is left; Manx
///   does not, because every block is routed to its owner and a borrowed
///   address would need a /32 route of its own. A fixed address (ipAddrs)
///   is the exception: it is taken from whichever block holds it.
/// - Blocks are claimed lowest CIDR first; addresses are handed out lowest
///   first. A block whose last address is released stays claimed.
struct IPAMState {
    /// Sorted by CIDR.
    var pools: [IPPool]
    var nodes: [String: ClusterNode]
    var blocks: [CIDR: IPAMBlock]

    init(_ set: ResourceSet) {
        pools = set.ipPools.values.sorted { $0.cidr < $1.cidr }
        nodes = set.nodes
        blocks = set.ipamBlocks
    }

    /// The pool a block or address belongs to (pools never overlap).
    func pool(containing cidr: CIDR) -> IPPool? { pools.first { $0.cidr.contains(cidr) } }

    func assignments(handle: String) -> [IPAMAssignment] {
        blocks.values.sorted { $0.cidr < $1.cidr }.flatMap { block in
            block.allocations.filter { $0.handle == handle }.map {
                IPAMAssignment(address: $0.address, block: block.cidr, pool: pool(containing: block.cidr)?.name ?? block.pool)
            }
        }
    }

    /// Whether IPAM may hand out the address of the pool (not the pool's
    /// network or broadcast address).
    static func usable(_ address: IPv4Address, in pool: IPPool) -> Bool {
        address != pool.cidr.address && address != pool.cidr.lastAddress
    }

    // MARK: Assigning

    /// Assigns an address; returns it and the block to write (nil when the
    /// handle already held an address: nothing changed).
    mutating func assign(_ r: IPAMRequest) throws(IPAMError) -> (IPAMAssignment, IPAMBlock?) {
        guard !r.handle.isEmpty else { throw IPAMError(.invalidRequest, "the request has no handle (container id)") }
        guard !r.node.isEmpty else { throw IPAMError(.invalidRequest, "the request has no node name") }
        if let held = assignments(handle: r.handle).first {
            if let wanted = r.address, wanted != held.address {
                throw IPAMError(.invalidRequest, "handle \(r.handle) already holds \(held.address), not the requested \(wanted)")
            }
            return (held, nil)
        }
        if let address = r.address { return try assignFixed(address, r) }
        return try assignDynamic(r)
    }

    /// The pools the request may use. Named pools must exist; for dynamic
    /// assignment they must also be enabled and select the node.
    func allowedPools(_ r: IPAMRequest, applyNodeSelector: Bool) throws(IPAMError) -> [IPPool] {
        let labels = nodes[r.node]?.labels ?? [:]
        func problem(_ p: IPPool) -> String? {
            if p.disabled { return "pool \(p.name) (\(p.cidr)) is disabled" }
            if applyNodeSelector && !p.nodeSelector.matches(labels) {
                return "pool \(p.name) (\(p.cidr)) does not allow node \(r.node) (nodeSelector \(p.nodeSelector))"
            }
            return nil
        }
        if r.pools.isEmpty {
            let allowed = pools.filter { problem($0) == nil }
            if allowed.isEmpty {
                let why = pools.isEmpty ? "there are no IP pools" : pools.compactMap(problem).joined(separator: "; ")
                throw IPAMError(.noPool, "no IP pool is usable by node \(r.node): \(why)")
            }
            return allowed
        }
        var chosen: [IPPool] = []
        for entry in r.pools {
            let found: IPPool?
            if entry.contains("/") {
                guard case .success(let cidr) = CIDR.parse(entry) else {
                    throw IPAMError(.invalidRequest, "'\(entry)' is not an IPv4 CIDR")
                }
                found = pools.first { $0.cidr == cidr }
            } else {
                found = pools.first { $0.name == entry }
            }
            guard let pool = found else {
                throw IPAMError(.noPool, entry.contains("/") ? "no IP pool has the CIDR \(entry)" : "no IP pool is named '\(entry)'")
            }
            if let why = problem(pool) { throw IPAMError(.noPool, why) }
            if !chosen.contains(pool) { chosen.append(pool) }
        }
        return chosen
    }

    mutating func assignDynamic(_ r: IPAMRequest) throws(IPAMError) -> (IPAMAssignment, IPAMBlock?) {
        let allowed = try allowedPools(r, applyNodeSelector: true)
        // The node's own blocks first, lowest CIDR first.
        let own = blocks.values.filter { $0.node == r.node }.sorted { $0.cidr < $1.cidr }
        for pool in allowed {
            for var block in own where pool.cidr.contains(block.cidr) {
                if let address = lowestFree(in: block, pool: pool) {
                    return allocate(address, in: &block, pool: pool, r)
                }
            }
        }
        // Then a new block for the node.
        for pool in allowed {
            if let cidr = unclaimedBlock(in: pool) {
                var block = IPAMBlock(cidr: cidr, pool: pool.name, node: r.node,
                                      ref: ResourceRef(kind: "IPAMBlock", namespace: nil, name: IPAMBlock.resourceName(cidr),
                                                       file: IPAM.fileName(cidr)))
                guard let address = lowestFree(in: block, pool: pool) else { continue }
                return allocate(address, in: &block, pool: pool, r)
            }
        }
        let names = allowed.map { "\($0.name) (\($0.cidr))" }
        let subject = names.count == 1 ? "pool \(names[0]) has" : "pools \(names.joined(separator: ", ")) have"
        throw IPAMError(.exhausted, "\(subject) no free address for node \(r.node)")
    }

    mutating func assignFixed(_ address: IPv4Address, _ r: IPAMRequest) throws(IPAMError) -> (IPAMAssignment, IPAMBlock?) {
        // Calico does not apply nodeSelector to ipAddrs: any enabled pool.
        guard let pool = pools.first(where: { !$0.disabled && $0.cidr.contains(address) }) else {
            throw IPAMError(.noPool, "\(address) is not in any enabled IP pool")
        }
        if !r.pools.isEmpty {
            let named = try allowedPools(r, applyNodeSelector: false)
            guard named.contains(pool) else {
                throw IPAMError(.noPool, "\(address) is in pool \(pool.name), not in the requested pools \(r.pools.joined(separator: ", "))")
            }
        }
        guard Self.usable(address, in: pool) else {
            throw IPAMError(.invalidRequest, "\(address) is the network or broadcast address of pool \(pool.name) (\(pool.cidr))")
        }
        if var block = blocks.values.first(where: { $0.cidr.contains(address) }) {
            if let holder = block.allocations.first(where: { $0.address == address }) {
                let who = holder.workload.isEmpty ? "" : " (\(holder.workload))"
                throw IPAMError(.addressInUse, "\(address) is already allocated to handle \(holder.handle)\(who) on node \(holder.node)")
            }
            return allocate(address, in: &block, pool: pool, r)
        }
        // No block holds it: claim the pool-sized block around it for this
        // node, or a smaller one if the pool's block size changed and that
        // would overlap an existing block.
        var length = pool.blockSize
        while length < 32 && overlapsExisting(CIDR(address, length)) { length += 1 }
        let cidr = CIDR(address, length)
        var block = IPAMBlock(cidr: cidr, pool: pool.name, node: r.node,
                              ref: ResourceRef(kind: "IPAMBlock", namespace: nil, name: IPAMBlock.resourceName(cidr),
                                               file: IPAM.fileName(cidr)))
        return allocate(address, in: &block, pool: pool, r)
    }

    mutating func allocate(_ address: IPv4Address, in block: inout IPAMBlock, pool: IPPool,
                           _ r: IPAMRequest) -> (IPAMAssignment, IPAMBlock?) {
        block.allocations.append(IPAMBlock.Allocation(address: address, handle: r.handle, workload: r.workload, node: r.node))
        block.allocations.sort { $0.address < $1.address }
        blocks[block.cidr] = block
        return (IPAMAssignment(address: address, block: block.cidr, pool: pool.name), block)
    }

    func lowestFree(in block: IPAMBlock, pool: IPPool) -> IPv4Address? {
        let taken = Set(block.allocations.map(\.address))
        var v = UInt64(block.cidr.address.value)
        let last = UInt64(block.cidr.lastAddress.value)
        while v <= last {
            let a = IPv4Address(UInt32(v))
            if !taken.contains(a) && Self.usable(a, in: pool) { return a }
            v += 1
        }
        return nil
    }

    func overlapsExisting(_ cidr: CIDR) -> Bool {
        blocks.keys.contains { $0.contains(cidr) || cidr.contains($0) }
    }

    /// The lowest block of the pool's block size that overlaps no existing
    /// block (of any pool or size) and has a usable address.
    func unclaimedBlock(in pool: IPPool) -> CIDR? {
        let taken = blocks.keys.map { (UInt64($0.address.value), UInt64($0.lastAddress.value)) }.sorted { $0 < $1 }
        let step = UInt64(1) << UInt64(32 - pool.blockSize)
        let end = UInt64(pool.cidr.lastAddress.value)
        var start = UInt64(pool.cidr.address.value)
        var i = 0
        while start <= end {
            let candidateEnd = start + step - 1
            while i < taken.count && taken[i].1 < start { i += 1 }
            if i < taken.count && taken[i].0 <= candidateEnd {
                // Skip past the claimed range, to the next aligned block.
                let next = taken[i].1 + 1
                start = (next + step - 1) / step * step
                continue
            }
            let cidr = CIDR(IPv4Address(UInt32(start)), pool.blockSize)
            // A one- or two-address block may hold only the pool's network
            // or broadcast address.
            if (start...candidateEnd).contains(where: { Self.usable(IPv4Address(UInt32($0)), in: pool) }) { return cidr }
            start += step
        }
        return nil
    }

    // MARK: Releasing

    /// Removes every allocation of the handle; returns the addresses and the
    /// blocks to write.
    mutating func release(handle: String) -> ([IPv4Address], [IPAMBlock]) {
        var released: [IPv4Address] = []
        var changed: [IPAMBlock] = []
        for cidr in blocks.keys.sorted() {
            var block = blocks[cidr]!
            let mine = block.allocations.filter { $0.handle == handle }
            guard !mine.isEmpty else { continue }
            released += mine.map(\.address)
            block.allocations.removeAll { $0.handle == handle }
            blocks[cidr] = block
            changed.append(block)
        }
        return (released.sorted(), changed)
    }
}
