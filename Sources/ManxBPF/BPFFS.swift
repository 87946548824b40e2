import CLibBPF
import Glibc

/// The BPF filesystem, where maps and programs outlive the process that
/// created them.
public enum BPFFS {
    public static let defaultMount = "/sys/fs/bpf"
    static let magic: Int = 0xcafe_4a11

    /// Mounts bpffs at `mountPoint` unless it is mounted already.
    public static func ensureMounted(at mountPoint: String = defaultMount) throws(BPFError) {
        var st = statfs()
        if statfs(mountPoint, &st) == 0, Int(st.f_type) == magic { return }
        try makeDirectories(mountPoint)
        if mount("bpf", mountPoint, "bpf", 0, nil) != 0 {
            throw BPFError("mount bpffs", errno: errno, mountPoint)
        }
    }

    /// `mkdir -p`, for pin directories.
    public static func makeDirectories(_ path: String) throws(BPFError) {
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw BPFError("mkdir", errno: errno, prefix)
            }
        }
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Removes a pin (or an empty pin directory). Missing is not an error.
    public static func unpin(_ path: String) throws(BPFError) {
        if unlink(path) == 0 || errno == ENOENT { return }
        if errno == EISDIR || errno == EPERM, rmdir(path) == 0 { return }
        throw BPFError("unlink", errno: errno, path)
    }

    /// Removes a pin directory and everything pinned in it.
    public static func removeTree(_ path: String) throws(BPFError) {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return }
            throw BPFError("opendir", errno: errno, path)
        }
        var children: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { children.append(name) }
        }
        closedir(dir)
        for child in children {
            let full = path + "/" + child
            var st = stat()
            if lstat(full, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
                try removeTree(full)
            } else {
                try unpin(full)
            }
        }
        if rmdir(path) != 0 && errno != ENOENT { throw BPFError("rmdir", errno: errno, path) }
    }
}
