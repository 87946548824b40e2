import CLibBPF
import Foundation
import Glibc

/// An ELF object opened from memory and loaded into the kernel. The libbpf
/// handle lives and dies with this owner; the maps and programs it hands out
/// hold their own duplicated descriptors and outlive it.
public final class BPFObject {
    private let handle: OpaquePointer
    public let name: String

    /// Opens `elf`. Maps declared with `LIBBPF_PIN_BY_NAME` are pinned under
    /// (or reused from) `pinRoot`, which is created if missing.
    public init(elf: [UInt8], name: String, pinRoot: String) throws(BPFError) {
        BPFLog.install()
        try BPFFS.ensureMounted()
        try BPFFS.makeDirectories(pinRoot)
        var opts = bpf_object_open_opts()
        opts.sz = optsSize(\bpf_object_open_opts.kernel_log_level, UInt32.self)
        let opened: OpaquePointer? = name.withCString { cname in
            pinRoot.withCString { croot in
                opts.object_name = cname
                opts.pin_root_path = croot
                return elf.withUnsafeBytes { bpf_object__open_mem($0.baseAddress, $0.count, &opts) }
            }
        }
        handle = try checkPointer(opened, "bpf_object__open_mem", name)
        self.name = name
    }

    deinit { bpf_object__close(handle) }

    /// Loads every program (the verifier runs here) and creates or reuses maps.
    public func load() throws(BPFError) {
        try check(bpf_object__load(handle), "bpf_object__load", "\(name); the verifier log is printed above")
    }

    public func map(named mapName: String) throws(BPFError) -> BPFMap {
        let map = try checkPointer(bpf_object__find_map_by_name(handle, mapName), "bpf_object__find_map_by_name", mapName)
        let fd = bpf_map__fd(map)
        try check(fd, "bpf_map__fd", "\(mapName): object not loaded")
        return try BPFMap(fd: FileDescriptor(duplicating: fd, "dup map fd"), name: mapName)
    }

    public func program(named programName: String) throws(BPFError) -> BPFProgram {
        let prog = try checkPointer(bpf_object__find_program_by_name(handle, programName), "bpf_object__find_program_by_name", programName)
        let fd = bpf_program__fd(prog)
        try check(fd, "bpf_program__fd", "\(programName): object not loaded")
        return try BPFProgram(fd: FileDescriptor(duplicating: fd, "dup program fd"), name: programName)
    }

    /// Names of the maps the object declares (`.maps` section, not internal ones).
    public var mapNames: [String] {
        var names: [String] = []
        var map = bpf_object__next_map(handle, nil)
        while let m = map {
            if let cname = bpf_map__name(m), !bpf_map__is_internal(m) { names.append(String(cString: cname)) }
            map = bpf_object__next_map(handle, m)
        }
        return names
    }
}

/// libbpf's own messages: warnings (verifier logs among them) go to stderr;
/// info, debug and netlink's notes only with MANX_BPF_DEBUG=1.
enum BPFLog {
    private static let installed: Void = {
        let verbose = ProcessInfo.processInfo.environment["MANX_BPF_DEBUG"] == "1"
        if verbose {
            _ = libbpf_set_print { _, format, args in
                guard let format, let args else { return 0 }
                return vdprintf(STDERR_FILENO, format, args)
            }
        } else {
            _ = libbpf_set_print { level, format, args in
                guard level == LIBBPF_WARN, let format, let args else { return 0 }
                // Netlink's extended ack for answers we expect and handle
                // (EEXIST when the clsact qdisc exists, ENOENT on queries).
                // libbpf prefixes its formats with "libbpf: ".
                if strstr(format, "Kernel error message") != nil { return 0 }
                return vdprintf(STDERR_FILENO, format, args)
            }
        }
    }()

    static func install() { _ = installed }
}
