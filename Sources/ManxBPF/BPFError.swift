import Glibc

/// A failed libbpf or kernel call: which call, the errno it gave, and the
/// context that names what was being done (a map, a program, an interface).
public struct BPFError: Error, CustomStringConvertible, Sendable, Equatable {
    public let operation: String
    public let errno: Int32
    public let context: String

    public init(_ operation: String, errno: Int32, _ context: String = "") {
        self.operation = operation
        self.errno = errno
        self.context = context
    }

    public var message: String { String(cString: strerror(errno)) }

    public var description: String {
        let what = context.isEmpty ? "" : " (\(context))"
        return "\(operation) failed\(what): \(message) [errno \(errno)]"
    }
}

/// libbpf returns -errno from calls that return int.
@inline(__always)
func check(_ rc: Int32, _ operation: String, _ context: @autoclosure () -> String = "") throws(BPFError) {
    if rc < 0 { throw BPFError(operation, errno: -rc, context()) }
}

/// libbpf returns NULL and sets errno from calls that return a pointer.
@inline(__always)
func checkPointer<T>(_ p: T?, _ operation: String, _ context: @autoclosure () -> String = "") throws(BPFError) -> T {
    guard let p else { throw BPFError(operation, errno: Glibc.errno == 0 ? EINVAL : Glibc.errno, context()) }
    return p
}

/// The `sz` of a libbpf options struct: up to the end of its last field.
/// libbpf rejects non-zero bytes past that, and Swift does not promise to
/// zero a struct's tail padding, so the padding must not be counted.
func optsSize<T, F>(_ lastField: KeyPath<T, F>, _: F.Type) -> Int {
    MemoryLayout<T>.offset(of: lastField)! + MemoryLayout<F>.size
}
