import ManxBPF
@testable import ManxCompiler
@testable import ManxDataplane
import ManxMapLayout
import ManxModel
import XCTest

/// Each generation's ipcache is written as the difference from the entries
/// it was last written from. Through random changes (entries added, removed,
/// changed and moved), the generation in force in the kernel always equals
/// the state applied, and the count of changed addresses, which decides
/// whether conntrack approvals are revoked, is exact.
final class IPCacheSyncTests: XCTestCase {
    func testKernelIPCacheFollowsEveryState() throws {
        try withScratchDataplane("ipc") { dataplane in
            var rng = SeededRandom(seed: 7)
            func random(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
            func entry() -> IPCacheEntry {
                IPCacheEntry(cidr: CIDR(IPv4Address(0x0a00_0000 | UInt32(random(64)) << 8), 24 + random(2) * 8),
                             identity: UInt32(100 + random(4)), localWorkload: random(2) == 0)
            }
            var list: [IPCacheEntry] = []
            for step in 0..<300 {
                var next = list
                switch random(6) {
                case 0, 1: next.insert(entry(), at: random(next.count + 1))
                case 2 where !next.isEmpty: next.remove(at: random(next.count))
                case 3 where !next.isEmpty: next[random(next.count)].identity = UInt32(100 + random(4))
                case 4 where !next.isEmpty: next.insert(next.remove(at: random(next.count)), at: random(next.count))
                case 5: next = (0..<random(20)).map { _ in entry() }
                default: break
                }
                // One entry per CIDR, as the compiler gives.
                var seen = Set<CIDR>()
                next = next.filter { seen.insert($0.cidr).inserted }

                var state = CompiledState()
                state.ipcache = next
                let report = try dataplane.apply(state)
                let before = Dictionary(uniqueKeysWithValues: list.map { ($0.cidr, $0) })
                let after = Dictionary(uniqueKeysWithValues: next.map { ($0.cidr, $0) })
                let changed = Set(before.keys).union(after.keys).filter { before[$0] != after[$0] }.count
                XCTAssertEqual(report.ipcacheChanges, changed, "step \(step)")
                XCTAssertEqual(report.flipped, changed > 0, "step \(step)")

                var kernel: [CIDR: IPCacheEntry] = [:]
                for (key, value) in try dataplane.maps.ipcache.entries(as: (manx_ipcache_key, manx_ipcache_value).self)
                where key.generationIndex == dataplane.generation {
                    kernel[key.cidr] = IPCacheEntry(cidr: key.cidr, identity: value.identity,
                                                    localWorkload: value.flags & UInt32(MANX_IPC_F_LOCAL_WORKLOAD) != 0)
                }
                XCTAssertEqual(kernel, after, "step \(step)")
                list = next
            }
        }
    }
}

