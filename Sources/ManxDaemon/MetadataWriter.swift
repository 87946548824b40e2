import Dispatch
import ManxDataplane
import ManxNodeState
import Synchronization

/// Writes the metadata file off the daemon's pass, in order, the latest
/// state winning: a pass ends when its state is in force, and encoding
/// tens of thousands of rules does not hold up the next change. The file
/// still follows the state it describes, never precedes it.
final class MetadataWriter: Sendable {
    private let paths: NodePaths
    private let queue = DispatchQueue(label: "manx.metadata")
    private let waiting = Mutex<(next: NodeMetadata?, scheduled: Bool)>((nil, false))
    /// Used on `queue` only.
    private let cache = Mutex(MetadataCache())

    init(paths: NodePaths) { self.paths = paths }

    func submit(_ metadata: NodeMetadata) {
        let schedule = waiting.withLock { w in
            w.next = metadata
            defer { w.scheduled = true }
            return !w.scheduled
        }
        if schedule { queue.async { self.drain() } }
    }

    /// Returns once everything submitted is written.
    func flush() { queue.sync {} }

    private func drain() {
        while let next = waiting.withLock({ w -> NodeMetadata? in
            defer { w.next = nil }
            if w.next == nil { w.scheduled = false }
            return w.next
        }) {
            cache.withLock { cache in try? next.write(paths, cache: cache) }
        }
    }
}
