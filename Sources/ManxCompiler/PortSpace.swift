/// A set of 16-bit values (ports, or ICMP type/code) as sorted, disjoint,
/// non-adjacent closed ranges.
struct PortSet: Hashable, Sendable {
    private(set) var ranges: [ClosedRange<UInt32>]

    static let full = PortSet(ranges: [0...0xffff])
    static let empty = PortSet(ranges: [])

    init(ranges: [ClosedRange<UInt32>]) {
        var sorted = ranges.sorted { $0.lowerBound < $1.lowerBound }
        var merged: [ClosedRange<UInt32>] = []
        for r in sorted {
            if let last = merged.last, r.lowerBound <= last.upperBound + 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        sorted = merged
        self.ranges = sorted
    }

    var isEmpty: Bool { ranges.isEmpty }

    func contains(_ v: UInt32) -> Bool {
        var lo = 0, hi = ranges.count - 1
        while lo <= hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < v { lo = mid + 1 } else if ranges[mid].lowerBound > v { hi = mid - 1 } else { return true }
        }
        return false
    }

    func subtracting(_ other: PortSet) -> PortSet {
        var result: [ClosedRange<UInt32>] = []
        var j = 0
        for r in ranges {
            var start = r.lowerBound
            var done = false
            while j < other.ranges.count && other.ranges[j].upperBound < start { j += 1 }
            var k = j
            while k < other.ranges.count && other.ranges[k].lowerBound <= r.upperBound {
                let o = other.ranges[k]
                if o.lowerBound > start { result.append(start...(o.lowerBound - 1)) }
                if o.upperBound >= r.upperBound { done = true; break }
                start = o.upperBound + 1
                k += 1
            }
            if !done { result.append(start...r.upperBound) }
        }
        return PortSet(ranges: result)
    }
}

/// Splits [lo, hi] into the aligned power-of-two blocks an LPM trie can hold:
/// (value, significant bits out of 16).
func portPrefixes(_ range: ClosedRange<UInt32>) -> [(value: UInt16, bits: Int)] {
    var result: [(UInt16, Int)] = []
    var lo = range.lowerBound
    let hi = range.upperBound
    while lo <= hi {
        // The largest block that starts at lo (aligned) and fits in [lo, hi].
        var size: UInt32 = lo == 0 ? 1 << 16 : lo & (~lo &+ 1)
        while lo + size - 1 > hi { size >>= 1 }
        result.append((UInt16(lo), 16 - size.trailingZeroBitCount))
        if lo + size > 0xffff { break }
        lo += size
    }
    return result
}

/// "Paint" the cells between boundaries, first writer wins, in near-linear
/// time: a union-find over cells skips the ones already decided.
struct FirstFitCells {
    /// Cell i covers [starts[i], starts[i+1] - 1].
    let starts: [UInt32]
    private var next: [Int]

    init(boundaries: Set<UInt32>, upper: UInt32) {
        var s = Array(boundaries.filter { $0 <= upper })
        if !s.contains(0) { s.append(0) }
        s.sort()
        starts = s
        next = Array(0...s.count)
    }

    var count: Int { starts.count }

    func range(of cell: Int, upper: UInt32) -> ClosedRange<UInt32> {
        starts[cell]...(cell + 1 < starts.count ? starts[cell + 1] - 1 : upper)
    }

    /// The first cell whose start is >= v.
    func cellIndex(atOrAfter v: UInt32) -> Int {
        var lo = 0, hi = starts.count
        while lo < hi { let m = (lo + hi) / 2; if starts[m] < v { lo = m + 1 } else { hi = m } }
        return lo
    }

    private mutating func find(_ i: Int) -> Int {
        var root = i
        while next[root] != root { root = next[root] }
        var j = i
        while next[j] != root { let n = next[j]; next[j] = root; j = n }
        return root
    }

    /// Calls `body` for every not-yet-taken cell inside `set`, and takes it.
    mutating func take(_ set: PortSet, _ body: (Int) -> Void) {
        for r in set.ranges {
            let first = cellIndex(atOrAfter: r.lowerBound)
            let end = cellIndex(atOrAfter: r.upperBound &+ 1)
            var i = find(first)
            while i < end {
                body(i)
                next[i] = i + 1
                i = find(i + 1)
            }
        }
    }

    /// Takes every remaining cell.
    mutating func takeRest(_ body: (Int) -> Void) {
        var i = find(0)
        while i < starts.count {
            body(i)
            next[i] = i + 1
            i = find(i + 1)
        }
    }
}
