import CLibBPF
import Glibc

/// tc clsact attachment. Filters persist in the kernel after the process
/// exits; that is how enforcement survives a daemon restart.
public enum TC {
    public enum Hook: Sendable, CustomStringConvertible {
        case ingress, egress
        var attachPoint: bpf_tc_attach_point { self == .ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS }
        public var description: String { self == .ingress ? "ingress" : "egress" }
    }

    /// Our filters use one fixed handle and priority per hook, so attaching
    /// again atomically replaces the previous program.
    public static let handle: UInt32 = 0x4d58 // "MX"
    public static let priority: UInt32 = 1

    private static func hook(_ ifindex: Int32, _ point: Hook) -> bpf_tc_hook {
        var h = bpf_tc_hook()
        h.sz = optsSize(\bpf_tc_hook.parent, UInt32.self)
        h.ifindex = ifindex
        h.attach_point = point.attachPoint
        return h
    }

    private static func opts(progFD: Int32 = 0, flags: UInt32 = 0) -> bpf_tc_opts {
        var o = bpf_tc_opts()
        o.sz = optsSize(\bpf_tc_opts.priority, UInt32.self)
        o.prog_fd = progFD
        o.flags = flags
        o.handle = handle
        o.priority = priority
        return o
    }

    public static func attach(_ program: BPFProgram, ifindex: Int32, hook point: Hook) throws(BPFError) {
        var h = hook(ifindex, point)
        let rc = bpf_tc_hook_create(&h) // creates the clsact qdisc
        if rc < 0 && rc != -EEXIST { try check(rc, "bpf_tc_hook_create", "ifindex \(ifindex)") }
        var o = opts(progFD: program.fd.raw, flags: UInt32(BPF_TC_F_REPLACE.rawValue))
        try check(bpf_tc_attach(&h, &o), "bpf_tc_attach", "\(program.name) on ifindex \(ifindex) \(point)")
    }

    /// Detaches our filter. Returns false when none was attached.
    @discardableResult
    public static func detach(ifindex: Int32, hook point: Hook) throws(BPFError) -> Bool {
        var h = hook(ifindex, point)
        var o = opts()
        let rc = bpf_tc_detach(&h, &o)
        if rc == -ENOENT || rc == -EINVAL || rc == -ENODEV { return false }
        try check(rc, "bpf_tc_detach", "ifindex \(ifindex) \(point)")
        return true
    }

    /// The id of the program attached by us, or nil.
    public static func attachedProgramID(ifindex: Int32, hook point: Hook) throws(BPFError) -> UInt32? {
        var h = hook(ifindex, point)
        var o = opts()
        let rc = bpf_tc_query(&h, &o)
        if rc == -ENOENT || rc == -EINVAL || rc == -ENODEV { return nil }
        try check(rc, "bpf_tc_query", "ifindex \(ifindex) \(point)")
        return o.prog_id
    }
}

/// XDP attachment.
public enum XDP {
    public enum Mode: Sendable {
        case auto, generic, native
        var flags: UInt32 {
            switch self {
            case .auto: return 0
            case .generic: return UInt32(XDP_FLAGS_SKB_MODE)
            case .native: return UInt32(XDP_FLAGS_DRV_MODE)
            }
        }
    }

    public static func attach(_ program: BPFProgram, ifindex: Int32, mode: Mode = .auto) throws(BPFError) {
        try check(bpf_xdp_attach(ifindex, program.fd.raw, mode.flags, nil), "bpf_xdp_attach", "\(program.name) on ifindex \(ifindex)")
    }

    public static func detach(ifindex: Int32, mode: Mode = .auto) throws(BPFError) {
        try check(bpf_xdp_detach(ifindex, mode.flags, nil), "bpf_xdp_detach", "ifindex \(ifindex)")
    }

    public static func attachedProgramID(ifindex: Int32) throws(BPFError) -> UInt32? {
        var id: UInt32 = 0
        try check(bpf_xdp_query_id(ifindex, 0, &id), "bpf_xdp_query_id", "ifindex \(ifindex)")
        return id == 0 ? nil : id
    }
}

/// Interface names and indexes in the calling thread's network namespace.
public enum NetworkInterface {
    public static func index(named name: String) throws(BPFError) -> Int32 {
        let idx = if_nametoindex(name)
        if idx == 0 { throw BPFError("if_nametoindex", errno: errno, name) }
        return Int32(idx)
    }

    /// Every interface of the current network namespace: (ifindex, name).
    public static func all() -> [(index: Int32, name: String)] {
        guard let list = if_nameindex() else { return [] }
        defer { if_freenameindex(list) }
        var result: [(Int32, String)] = []
        var entry = list
        while entry.pointee.if_index != 0, let name = entry.pointee.if_name {
            result.append((Int32(entry.pointee.if_index), String(cString: name)))
            entry += 1
        }
        return result
    }

    /// The interface holding an IPv4 address (network byte order), with its
    /// index and MTU; nil if none does. getifaddrs and SIOCGIFMTU read the
    /// calling thread's namespace (/sys may show another one).
    public static func holding(addressNetworkOrder address: UInt32) -> (name: String, index: Int32, mtu: Int)? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(first) }
        var entry: UnsafeMutablePointer<ifaddrs>? = first
        while let e = entry {
            defer { entry = e.pointee.ifa_next }
            guard let sa = e.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET), let cName = e.pointee.ifa_name else { continue }
            let found = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr } == address
            guard found else { continue }
            let name = String(cString: cName)
            guard let index = try? Self.index(named: name), let mtu = mtu(named: name) else { return nil }
            return (name, index, mtu)
        }
        return nil
    }

    public static func mtu(named name: String) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var request = ifreq()
        let bytes = Array(name.utf8.prefix(Int(IF_NAMESIZE) - 1))
        withUnsafeMutableBytes(of: &request.ifr_ifrn.ifrn_name) { buffer in
            for (i, b) in bytes.enumerated() { buffer[i] = b }
        }
        guard ioctl(fd, UInt(SIOCGIFMTU), &request) == 0 else { return nil }
        return Int(request.ifr_ifru.ifru_mtu)
    }

    public static func name(index: Int32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(IF_NAMESIZE) + 1)
        guard if_indextoname(UInt32(index), &buffer) != nil else { return nil }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
