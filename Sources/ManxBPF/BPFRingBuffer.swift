import CLibBPF
import Glibc

/// A consumer of a BPF ring buffer map: `poll` returns the records that
/// arrived, as byte arrays, in order.
public final class BPFRingBuffer {
    private final class Sink { var records: [[UInt8]] = [] }

    private let handle: OpaquePointer
    private let sink: Sink
    private let map: BPFMap

    public init(_ map: BPFMap) throws(BPFError) {
        self.map = map
        sink = Sink()
        let context = Unmanaged.passUnretained(sink).toOpaque()
        let rb = ring_buffer__new(map.fd.raw, { ctx, data, size in
            guard let ctx, let data else { return 0 }
            let sink = Unmanaged<Sink>.fromOpaque(ctx).takeUnretainedValue()
            sink.records.append(Array(UnsafeRawBufferPointer(start: data, count: Int(size))))
            return 0
        }, context, nil)
        handle = try checkPointer(rb, "ring_buffer__new", map.name)
    }

    deinit { ring_buffer__free(handle) }

    /// Waits up to `timeoutMs` for records; returns what arrived.
    public func poll(timeoutMs: Int32) throws(BPFError) -> [[UInt8]] {
        let rc = ring_buffer__poll(handle, timeoutMs)
        if rc < 0 && rc != -EINTR { try check(rc, "ring_buffer__poll", map.name) }
        defer { sink.records.removeAll(keepingCapacity: true) }
        return sink.records
    }
}
