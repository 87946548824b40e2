import Dispatch

/// Frees values on a background queue: a large dictionary dropped by the
/// compiler is freed off the path of a change. Objects the value holds may
/// still be used elsewhere; only their reference counts (atomic) are
/// touched there, and an object whose last reference it was is
/// deinitialised there, unreachable from anything else.
enum DeferredRelease {
    private final class Box<T>: @unchecked Sendable {
        var value: T?
        init(_ value: T) { self.value = value }
    }

    private static let queue = DispatchQueue(label: "manx.compiler.release", qos: .utility)

    /// Takes a reference to `value`; the caller drops its own.
    static func release<T>(_ value: T) {
        let box = Box(value)
        queue.async { box.value = nil }
    }
}
