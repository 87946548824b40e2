import ManxBPF
@testable import ManxCompiler
@testable import ManxDataplane
import XCTest

/// The compiler hands the dataplane its allocations with the changes since
/// its previous compile; the dataplane writes only those when the kernel
/// holds that compile's, and the whole difference otherwise. Through random
/// states (ids added and dropped, changes from a compile the kernel does not
/// hold, none at all, a refused state in between), manx_alloc always holds
/// exactly the allocations of the state in force.
final class AllocationSyncTests: XCTestCase {
    func testKernelAllocationsFollowEveryState() throws {
        try withScratchDataplane("alc") { dataplane in
            var rng = SeededRandom(seed: 11)
            func random(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
            var ids: [Allocations.Key: UInt32] = [:]
            var next = ReservedRule.first
            var lastCompile: UInt64 = 0
            var taken = [0, 0, 0] // delta, whole difference, refused
            for step in 1...200 {
                var changes = CompiledState.AllocationChanges(since: lastCompile)
                var wanted = ids
                for key in wanted.keys where random(6) == 0 {
                    wanted[key] = nil
                    changes.removed.append(key)
                }
                for _ in 0..<random(6) {
                    let key = Allocations.Key(.rule, Digest.sha256("rule \(next)"))
                    wanted[key] = next
                    changes.set[key] = next
                    next += 1
                }
                // A compiler that did not recover: an old id for new content.
                let refused = step > 1 && random(10) == 0
                if refused {
                    let key = Allocations.Key(.rule, Digest.sha256("rebound \(step)"))
                    wanted[key] = ReservedRule.first
                    changes.set[key] = ReservedRule.first
                }
                var state = CompiledState()
                state.compileID = UInt64(1_000_000 + step)
                state.allocations = Allocations(ids: wanted, next: [.rule: next])
                switch random(5) {
                case 0: state.allocationChanges = nil
                case 1: changes.since = 42; state.allocationChanges = changes // a compile the kernel never held
                default: state.allocationChanges = changes
                }
                if refused {
                    XCTAssertThrowsError(try dataplane.apply(state), "step \(step)")
                    taken[2] += 1
                } else {
                    taken[state.allocationChanges?.since == lastCompile ? 0 : 1] += 1
                    _ = try dataplane.apply(state)
                    ids = wanted
                    lastCompile = state.compileID
                }
                let kernel = try dataplane.readAllocations()
                XCTAssertEqual(kernel.ids, ids, "step \(step)")
                XCTAssertEqual(dataplane.allocations.ids, ids, "step \(step)")
            }
            XCTAssertTrue(taken.allSatisfy { $0 > 5 }, "every path taken: \(taken)")
        }
    }
}
