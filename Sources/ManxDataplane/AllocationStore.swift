import Glibc
import ManxBPF
import ManxCompiler
import ManxMapLayout

// The compiler's allocations kept in manx_alloc, with the state they
// number: a restarted daemon reads them back, so it gives every content the
// id it had (rule-hit counters stay with their rules, unchanged rule sets
// keep their ids and their conntrack approvals) and hands out no id twice.

extension manx_alloc_key {
    init(kind: UInt32, digest: Digest?) {
        self.init()
        self.kind = kind
        if let digest {
            withUnsafeMutableBytes(of: &self.digest) { raw in raw.copyBytes(from: digest.bytes) }
        }
    }

    var digestValue: Digest { Digest(bytes: withUnsafeBytes(of: digest) { Array($0) }) }
}

extension Dataplane {
    func readAllocations() throws(BPFError) -> Allocations {
        var result = Allocations()
        for (key, value) in try maps.allocations.entries(as: (manx_alloc_key, manx_alloc_value).self) {
            if key.kind >= UInt32(MANX_ALLOC_NEXT.rawValue) {
                if let kind = Allocations.Kind(rawValue: key.kind - UInt32(MANX_ALLOC_NEXT.rawValue)) { result.next[kind] = value.id }
            } else if let kind = Allocations.Kind(rawValue: key.kind) {
                result.ids[Allocations.Key(kind, key.digestValue)] = value.id
            }
        }
        return result
    }

    /// Records new ids and advanced counters; nothing is deleted here. An id
    /// below the recorded counter that is new to the kernel means a compiler
    /// that did not recover these allocations: it would rebind an id. When
    /// the kernel holds the allocations of the compile the state's changes
    /// start from, only those changes are looked at; returns whether they
    /// were (then pruning takes them too).
    func writeAllocations(_ state: CompiledState) throws(BPFError) -> Bool {
        let wanted = state.allocations
        let new: [Allocations.Key: UInt32]
        let byChanges = state.allocationChanges.map { $0.since == allocationsCompileID } ?? false
        if byChanges, let changes = state.allocationChanges {
            new = changes.set
        } else {
            new = wanted.ids.filter { allocations.ids[$0.key] != $0.value }
        }
        allocationsCompileID = nil // until pruned: the kernel holds more than one compile's
        for (key, id) in new where id < allocations.next(key.kind) {
            throw BPFError("allocations", errno: EINVAL, "\(key.kind) id \(id) was handed out before: the compiler must recover the dataplane's allocations")
        }
        for (kind, next) in wanted.next where allocations.next(kind) < next {
            try maps.allocations.update(manx_alloc_key(kind: UInt32(MANX_ALLOC_NEXT.rawValue) + kind.rawValue, digest: nil),
                                        manx_alloc_value(id: next))
            allocations.next[kind] = next
        }
        for (key, id) in new {
            try maps.allocations.update(manx_alloc_key(kind: key.kind.rawValue, digest: key.digest), manx_alloc_value(id: id))
            unpruned[key] = id
        }
        return byChanges
    }

    /// Forgets contents the state in force no longer uses. Their ids are not
    /// handed out again: the counters only grow.
    func pruneAllocations(_ state: CompiledState, byChanges: Bool) throws(BPFError) {
        let wanted = state.allocations
        let gone: [Allocations.Key]
        if byChanges, let changes = state.allocationChanges {
            gone = changes.removed
        } else {
            gone = Set(allocations.ids.keys).union(unpruned.keys).filter { wanted.ids[$0] == nil }
        }
        for key in gone {
            try maps.allocations.delete(manx_alloc_key(kind: key.kind.rawValue, digest: key.digest))
        }
        allocations.ids = wanted.ids
        unpruned = [:]
        allocationsCompileID = state.compileID
    }
}
