import CLibBPF
import Glibc

/// A BPF map, by owned file descriptor. Keys and values are plain C structs
/// (imported from the shared layout header) or integers; this type checks
/// their sizes against the kernel's and does all pointer work.
public final class BPFMap: Sendable {
    public let name: String
    public let fd: FileDescriptor
    public let type: bpf_map_type
    public let keySize: Int
    public let valueSize: Int
    public let maxEntries: Int

    init(fd: FileDescriptor, name: String) throws(BPFError) {
        var info = bpf_map_info()
        var len = UInt32(MemoryLayout<bpf_map_info>.size)
        try check(bpf_obj_get_info_by_fd(fd.raw, &info, &len), "bpf_obj_get_info_by_fd", name)
        self.fd = fd
        self.name = name
        self.type = bpf_map_type(rawValue: info.type)
        self.keySize = Int(info.key_size)
        self.valueSize = Int(info.value_size)
        self.maxEntries = Int(info.max_entries)
    }

    /// Opens a map pinned in bpffs.
    public static func openPinned(_ path: String) throws(BPFError) -> BPFMap {
        let raw = bpf_obj_get(path)
        try check(raw, "bpf_obj_get", path)
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return try BPFMap(fd: FileDescriptor(owning: raw), name: name)
    }

    /// A new, unpinned hash map whose elements are allocated as they are
    /// added (BPF_F_NO_PREALLOC): the inner maps of a map of maps. It lives
    /// as long as a descriptor or a map of maps holds it.
    public static func createHash(name: String, keySize: Int, valueSize: Int, maxEntries: Int) throws(BPFError) -> BPFMap {
        var opts = bpf_map_create_opts()
        opts.sz = optsSize(\bpf_map_create_opts.map_ifindex, UInt32.self)
        opts.map_flags = UInt32(BPF_F_NO_PREALLOC)
        let raw = bpf_map_create(BPF_MAP_TYPE_HASH, name, UInt32(keySize), UInt32(valueSize), UInt32(maxEntries), &opts)
        try check(raw, "bpf_map_create", "\(name) (\(maxEntries) entries)")
        return try BPFMap(fd: FileDescriptor(owning: raw), name: name)
    }

    // MARK: Maps of maps

    /// The map in a map of maps' slot, or nil when the slot is empty.
    public func inner<K: BitwiseCopyable>(at key: K) throws(BPFError) -> BPFMap? {
        // From user space a map of maps' value is the inner map's id.
        guard let id = try lookup(key, as: UInt32.self) else { return nil }
        let raw = bpf_map_get_fd_by_id(id)
        if raw == -ENOENT { return nil } // freed since the lookup
        try check(raw, "bpf_map_get_fd_by_id", "\(name): inner map id \(id)")
        return try BPFMap(fd: FileDescriptor(owning: raw), name: "\(name)[\(key)]")
    }

    /// Puts a map into a map of maps' slot (replacing what was there).
    /// The kernel then waits for an RCU grace period (maybe_wait_bpf_programs).
    public func setInner<K: BitwiseCopyable>(at key: K, _ map: BPFMap) throws(BPFError) {
        try update(key, map.fd.raw)
    }

    /// Puts maps into many slots in one syscall (BPF_MAP_UPDATE_BATCH):
    /// the kernel waits for one RCU grace period after the whole batch,
    /// where single updates wait once each. Slots are set in order.
    public func setInners<K: BitwiseCopyable>(_ pairs: [(K, BPFMap)]) throws(BPFError) {
        try updateBatch(pairs.map { ($0.0, $0.1.fd.raw) })
    }

    public func pin(at path: String) throws(BPFError) {
        try check(bpf_obj_pin(fd.raw, path), "bpf_obj_pin", "\(name) at \(path)")
    }

    public var isPerCPU: Bool {
        [BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH].contains(type)
    }

    /// Possible CPUs, which is what per-CPU values are sized by.
    public static let possibleCPUs: Int = Int(max(libbpf_num_possible_cpus(), 1))

    private func checkSizes<K, V>(_: K.Type, _: V.Type, perCPU: Bool = false) throws(BPFError) {
        guard MemoryLayout<K>.size == keySize else {
            throw BPFError("key size check", errno: EINVAL, "\(name): key is \(keySize) bytes, Swift type \(K.self) is \(MemoryLayout<K>.size)")
        }
        guard MemoryLayout<V>.size == valueSize || (V.self == Void.self) else {
            throw BPFError("value size check", errno: EINVAL, "\(name): value is \(valueSize) bytes, Swift type \(V.self) is \(MemoryLayout<V>.size)")
        }
        if perCPU != isPerCPU {
            throw BPFError("map kind check", errno: EINVAL, "\(name): per-CPU map accessed \(perCPU ? "as" : "without") per-CPU values")
        }
    }

    // MARK: Single elements

    public func lookup<K: BitwiseCopyable, V: BitwiseCopyable>(_ key: K, as: V.Type = V.self) throws(BPFError) -> V? {
        try checkSizes(K.self, V.self)
        var key = key
        var value = unsafe_zero(V.self)
        let rc = bpf_map_lookup_elem(fd.raw, &key, &value)
        if rc == -ENOENT { return nil }
        try check(rc, "bpf_map_lookup_elem", name)
        return value
    }

    public struct UpdateFlags: Sendable {
        let raw: UInt64
        public static let any = UpdateFlags(raw: UInt64(BPF_ANY))
        public static let noExist = UpdateFlags(raw: UInt64(BPF_NOEXIST))
        public static let exist = UpdateFlags(raw: UInt64(BPF_EXIST))
    }

    public func update<K: BitwiseCopyable, V: BitwiseCopyable>(_ key: K, _ value: V, flags: UpdateFlags = .any) throws(BPFError) {
        try checkSizes(K.self, V.self)
        var key = key
        var value = value
        try check(bpf_map_update_elem(fd.raw, &key, &value, flags.raw), "bpf_map_update_elem", name)
    }

    /// Returns false when the key was not there.
    @discardableResult
    public func delete<K: BitwiseCopyable>(_ key: K) throws(BPFError) -> Bool {
        guard MemoryLayout<K>.size == keySize else { throw BPFError("key size check", errno: EINVAL, name) }
        var key = key
        let rc = bpf_map_delete_elem(fd.raw, &key)
        if rc == -ENOENT { return false }
        try check(rc, "bpf_map_delete_elem", name)
        return true
    }

    // MARK: Per-CPU values

    /// One value per possible CPU. The kernel pads each to 8 bytes.
    public func lookupPerCPU<K: BitwiseCopyable, V: BitwiseCopyable>(_ key: K, as: V.Type = V.self) throws(BPFError) -> [V]? {
        try checkSizes(K.self, V.self, perCPU: true)
        let stride = (MemoryLayout<V>.size + 7) & ~7
        var key = key
        var buffer = [UInt8](repeating: 0, count: stride * Self.possibleCPUs)
        let rc = buffer.withUnsafeMutableBytes { bpf_map_lookup_elem(fd.raw, &key, $0.baseAddress) }
        if rc == -ENOENT { return nil }
        try check(rc, "bpf_map_lookup_elem", name)
        return buffer.withUnsafeBytes { raw in
            (0..<Self.possibleCPUs).map { raw.loadUnaligned(fromByteOffset: $0 * stride, as: V.self) }
        }
    }

    /// Sets the same value on every CPU (zeroes, typically).
    public func updatePerCPU<K: BitwiseCopyable, V: BitwiseCopyable>(_ key: K, _ value: V, flags: UpdateFlags = .any) throws(BPFError) {
        try checkSizes(K.self, V.self, perCPU: true)
        let stride = (MemoryLayout<V>.size + 7) & ~7
        var key = key
        var buffer = [UInt8](repeating: 0, count: stride * Self.possibleCPUs)
        buffer.withUnsafeMutableBytes { raw in
            for cpu in 0..<Self.possibleCPUs { raw.storeBytes(of: value, toByteOffset: cpu * stride, as: V.self) }
        }
        let rc = buffer.withUnsafeBytes { bpf_map_update_elem(fd.raw, &key, $0.baseAddress, flags.raw) }
        try check(rc, "bpf_map_update_elem", name)
    }

    // MARK: Iteration and batches

    /// Every key, in the kernel's iteration order. Keys added or removed
    /// concurrently may or may not be seen (as with any map walk).
    public func keys<K: BitwiseCopyable>(as: K.Type = K.self) throws(BPFError) -> [K] {
        guard MemoryLayout<K>.size == keySize else { throw BPFError("key size check", errno: EINVAL, name) }
        var result: [K] = []
        var next = unsafe_zero(K.self)
        var rc = bpf_map_get_next_key(fd.raw, nil, &next)
        while rc == 0 {
            result.append(next)
            var current = next
            rc = bpf_map_get_next_key(fd.raw, &current, &next)
            if result.count > maxEntries * 2 + 16 { break } // a map churning under us
        }
        if rc != -ENOENT { try check(rc, "bpf_map_get_next_key", name) }
        return result
    }

    /// Every element. Plain hash maps and arrays of maps (whose empty slots
    /// the kernel skips) are read in batches (BPF_MAP_LOOKUP_BATCH: one
    /// syscall per chunk, not two per element); other types key by key.
    public func entries<K: BitwiseCopyable, V: BitwiseCopyable>(as: (K, V).Type = (K, V).self) throws(BPFError) -> [(K, V)] {
        try checkSizes(K.self, V.self)
        guard type == BPF_MAP_TYPE_HASH || type == BPF_MAP_TYPE_LRU_HASH || type == BPF_MAP_TYPE_ARRAY_OF_MAPS else {
            var result: [(K, V)] = []
            for key in try keys(as: K.self) {
                if let value = try lookup(key, as: V.self) { result.append((key, value)) }
            }
            return result
        }
        var result: [(K, V)] = []
        var chunk = min(max(maxEntries, 1), 4096)
        var position: UInt32 = 0 // the kernel's cursor: a bucket index for hash maps, the key (u32) for arrays
        var first = true
        while true {
            var keys = [K](repeating: unsafe_zero(K.self), count: chunk)
            var values = [V](repeating: unsafe_zero(V.self), count: chunk)
            var count = UInt32(chunk)
            var next: UInt32 = 0
            var opts = bpf_map_batch_opts()
            opts.sz = optsSize(\bpf_map_batch_opts.flags, UInt64.self)
            let rc = keys.withUnsafeMutableBytes { k in
                values.withUnsafeMutableBytes { v in
                    first ? bpf_map_lookup_batch(fd.raw, nil, &next, k.baseAddress, v.baseAddress, &count, &opts)
                          : bpf_map_lookup_batch(fd.raw, &position, &next, k.baseAddress, v.baseAddress, &count, &opts)
                }
            }
            // A bucket holds more elements than fit: read it again with room.
            if rc == -ENOSPC { chunk *= 2; continue }
            if rc != 0 && rc != -ENOENT { try check(rc, "bpf_map_lookup_batch", name) }
            for i in 0..<Int(count) { result.append((keys[i], values[i])) }
            if rc == -ENOENT { return result } // the last batch
            position = next
            first = false
        }
    }

    public func perCPUEntries<K: BitwiseCopyable, V: BitwiseCopyable>(as: (K, [V]).Type = (K, [V]).self) throws(BPFError) -> [(K, [V])] {
        var result: [(K, [V])] = []
        for key in try keys(as: K.self) {
            if let values = try lookupPerCPU(key, as: V.self) { result.append((key, values)) }
        }
        return result
    }

    /// Writes many elements in one syscall (BPF_MAP_UPDATE_BATCH), in chunks.
    /// LPM tries do not support batch ops; for them this falls back to
    /// single updates, which is the same syscall count libbpf would do.
    public func updateBatch<K: BitwiseCopyable, V: BitwiseCopyable>(_ pairs: [(K, V)], chunk: Int = 4096) throws(BPFError) {
        try checkSizes(K.self, V.self)
        if pairs.isEmpty { return }
        if type == BPF_MAP_TYPE_LPM_TRIE {
            for (k, v) in pairs { try update(k, v) }
            return
        }
        var start = 0
        while start < pairs.count {
            let end = min(start + chunk, pairs.count)
            var keys = pairs[start..<end].map(\.0)
            var values = pairs[start..<end].map(\.1)
            var count = UInt32(end - start)
            var opts = bpf_map_batch_opts()
            opts.sz = optsSize(\bpf_map_batch_opts.flags, UInt64.self)
            let rc = keys.withUnsafeMutableBytes { k in
                values.withUnsafeMutableBytes { v in
                    bpf_map_update_batch(fd.raw, k.baseAddress, v.baseAddress, &count, &opts)
                }
            }
            try check(rc, "bpf_map_update_batch", "\(name), \(end - start) elements")
            start = end
        }
    }

    /// Deletes every element (for tests and `bpfctl` clean-ups).
    public func clear<K: BitwiseCopyable>(keyType: K.Type) throws(BPFError) {
        for key in try keys(as: K.self) { try delete(key) }
    }
}

/// A zero-filled value of a C struct or integer type.
@inline(__always)
func unsafe_zero<T>(_: T.Type) -> T {
    withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { buffer in
        UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
        return buffer[0]
    }
}
