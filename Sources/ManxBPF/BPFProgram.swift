import CLibBPF
import Glibc

/// A loaded BPF program, by owned file descriptor.
public final class BPFProgram: Sendable {
    public let name: String
    public let fd: FileDescriptor
    public let id: UInt32
    public let tag: String

    init(fd: FileDescriptor, name: String) throws(BPFError) {
        var info = bpf_prog_info()
        var len = UInt32(MemoryLayout<bpf_prog_info>.size)
        try check(bpf_obj_get_info_by_fd(fd.raw, &info, &len), "bpf_obj_get_info_by_fd", name)
        self.fd = fd
        self.name = name
        self.id = info.id
        self.tag = withUnsafeBytes(of: info.tag) { $0.map { String(format: "%02x", $0) }.joined() }
    }

    /// The kernel's name of a loaded program (at most 15 characters), or
    /// nil when no program has that id.
    public static func kernelName(id: UInt32) -> String? {
        let raw = bpf_prog_get_fd_by_id(id)
        guard raw >= 0 else { return nil }
        let fd = FileDescriptor(owning: raw)
        var info = bpf_prog_info()
        var len = UInt32(MemoryLayout<bpf_prog_info>.size)
        guard bpf_obj_get_info_by_fd(fd.raw, &info, &len) == 0 else { return nil }
        return withUnsafeBytes(of: info.name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    public static func openPinned(_ path: String) throws(BPFError) -> BPFProgram {
        let raw = bpf_obj_get(path)
        try check(raw, "bpf_obj_get", path)
        return try BPFProgram(fd: FileDescriptor(owning: raw), name: path.split(separator: "/").last.map(String.init) ?? path)
    }

    public func pin(at path: String) throws(BPFError) {
        try check(bpf_obj_pin(fd.raw, path), "bpf_obj_pin", "\(name) at \(path)")
    }

    public struct TestRunResult: Sendable {
        public let returnValue: UInt32
        /// Average nanoseconds per repetition, as the kernel measured it.
        public let durationNanoseconds: UInt32
        public let packetOut: [UInt8]
    }

    /// `BPF_PROG_TEST_RUN`: runs the program on `packet`. For tc programs
    /// `ifindex` sets `skb->ifindex` (1, loopback, needs no device). Note
    /// that with `repeat > 1` the kernel reruns on the already modified buffer.
    /// `ifindex` is the device the program runs on; `ingressIfindex` the
    /// one the packet arrived on (0, the default: generated on this host).
    public func testRun(packet: [UInt8], repeat repetitions: Int = 1, ifindex: UInt32? = nil,
                        ingressIfindex: UInt32 = 0) throws(BPFError) -> TestRunResult {
        var opts = bpf_test_run_opts()
        opts.sz = optsSize(\bpf_test_run_opts.batch_size, UInt32.self)
        opts.repeat = Int32(repetitions)
        var out = [UInt8](repeating: 0, count: packet.count + 256)
        var ctx = __sk_buff()
        if let ifindex { ctx.ifindex = ifindex }
        ctx.ingress_ifindex = ingressIfindex
        let passContext = ifindex != nil || ingressIfindex != 0
        let rc: Int32 = packet.withUnsafeBytes { input in
            out.withUnsafeMutableBytes { output in
                withUnsafeMutableBytes(of: &ctx) { ctxBytes in
                    opts.data_in = input.baseAddress
                    opts.data_size_in = UInt32(input.count)
                    opts.data_out = output.baseAddress
                    opts.data_size_out = UInt32(output.count)
                    if passContext {
                        opts.ctx_in = UnsafeRawPointer(ctxBytes.baseAddress)
                        opts.ctx_size_in = UInt32(ctxBytes.count)
                    }
                    return bpf_prog_test_run_opts(fd.raw, &opts)
                }
            }
        }
        try check(rc, "bpf_prog_test_run_opts", name)
        return TestRunResult(
            returnValue: opts.retval,
            durationNanoseconds: opts.duration,
            packetOut: Array(out.prefix(Int(opts.data_size_out)))
        )
    }
}
