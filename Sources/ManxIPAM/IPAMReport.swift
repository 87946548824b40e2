import ManxModel

/// What `bpfctl ipam show` and `bpfctl ipam check` print: address usage by
/// pool, block and node, and the allocations and endpoints that disagree.
/// Pure: built from the datastore's pools, blocks and WorkloadEndpoints.
public struct IPAMReport: Codable, Sendable, Equatable {
    public struct Usage: Codable, Sendable, Equatable {
        public var name: String
        /// Pools and blocks: the CIDR; nodes: nil.
        public var cidr: String?
        /// Blocks: the pool and node; pools: nil.
        public var pool: String?
        public var node: String?
        public var blocks: Int
        /// Addresses IPAM may hand out, and those it has.
        public var capacity: Int
        public var allocated: Int
    }

    public struct Problem: Codable, Sendable, Equatable, CustomStringConvertible {
        public enum Kind: String, Codable, Sendable {
            /// An address is held, and no WorkloadEndpoint has it.
            case allocationWithoutEndpoint
            /// A WorkloadEndpoint's address is held by no one, or by
            /// another container.
            case endpointWithoutAllocation
            /// A block outside every pool (its pool was deleted).
            case blockWithoutPool
        }
        public var kind: Kind
        public var address: String
        public var handle: String?
        public var workload: String?
        public var detail: String

        public var description: String { "\(kind.rawValue): \(address): \(detail)" }
    }

    public var pools: [Usage] = []
    public var blocks: [Usage] = []
    public var nodes: [Usage] = []
    public var problems: [Problem] = []

    public init(_ set: ResourceSet) {
        let state = IPAMState(set)
        var byNode: [String: Usage] = [:]
        var byPool: [String: Usage] = Dictionary(uniqueKeysWithValues: state.pools.map { pool in
            (pool.name, Usage(name: pool.name, cidr: pool.cidr.description, blocks: 0,
                              capacity: Int(pool.cidr.size) - (pool.cidr.size >= 2 ? 2 : 1), allocated: 0))
        })
        for block in state.blocks.values.sorted(by: { $0.cidr < $1.cidr }) {
            let pool = state.pool(containing: block.cidr)
            let capacity = pool.map { p in (0..<UInt32(block.cidr.size)).count(where: { IPAMState.usable(IPv4Address(block.cidr.address.value + $0), in: p) }) }
                ?? Int(block.cidr.size)
            let usage = Usage(name: block.ref.name, cidr: block.cidr.description, pool: pool?.name ?? block.pool, node: block.node,
                              blocks: 1, capacity: capacity, allocated: block.allocations.count)
            blocks.append(usage)
            if let pool {
                byPool[pool.name]?.blocks += 1
                byPool[pool.name]?.allocated += usage.allocated
            } else {
                problems.append(Problem(kind: .blockWithoutPool, address: block.cidr.description, detail:
                    "block \(block.cidr) of node \(block.node) is in no IPPool (pool \(block.pool) is gone); its \(block.allocations.count) allocations stay until their containers are deleted"))
            }
            byNode[block.node, default: Usage(name: block.node, blocks: 0, capacity: 0, allocated: 0)].blocks += 1
            byNode[block.node]?.capacity += capacity
            byNode[block.node]?.allocated += usage.allocated
        }
        pools = state.pools.compactMap { byPool[$0.name] }
        nodes = byNode.values.sorted { $0.name < $1.name }

        // Allocations against endpoints, both ways.
        let endpoints = Dictionary(set.workloadEndpoints.values.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        var held: [IPv4Address: IPAMBlock.Allocation] = [:]
        for block in state.blocks.values.sorted(by: { $0.cidr < $1.cidr }) {
            for a in block.allocations.sorted(by: { $0.address < $1.address }) {
                held[a.address] = a
                guard let wep = endpoints[a.address] else {
                    problems.append(Problem(kind: .allocationWithoutEndpoint, address: a.address.description, handle: a.handle, workload: a.workload,
                                            detail: "held by container \(a.handle) (\(a.workload)) on node \(a.node), and no WorkloadEndpoint has it"))
                    continue
                }
                if wep.containerID != a.handle {
                    problems.append(Problem(kind: .allocationWithoutEndpoint, address: a.address.description, handle: a.handle, workload: a.workload,
                                            detail: "held by container \(a.handle) (\(a.workload)), but WorkloadEndpoint \(wep.namespace)/\(wep.name) with it is container \(wep.containerID)'s"))
                }
            }
        }
        for wep in set.workloadEndpoints.values.sorted(by: { $0.address < $1.address }) where held[wep.address] == nil {
            problems.append(Problem(kind: .endpointWithoutAllocation, address: wep.address.description, handle: wep.containerID, workload: wep.podKey,
                                    detail: "WorkloadEndpoint \(wep.namespace)/\(wep.name) (container \(wep.containerID)) has it, and IPAM holds it for no one"))
        }
    }
}
