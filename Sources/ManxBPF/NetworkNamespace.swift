import CLibBPF
import Foundation
import Glibc

/// Network namespaces are per thread: `run` does its work on a fresh thread
/// that entered the namespace, so the netlink sockets libbpf opens for tc
/// and XDP act there, while the rest of the process stays where it is.
public enum NetworkNamespace {
    public static func run<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
        nonisolated(unsafe) var result: Result<T, any Error> = .failure(BPFError("setns", errno: EINVAL, name))
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            let fd = open("/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { result = .failure(BPFError("open netns", errno: errno, name)); return }
            defer { close(fd) }
            guard manx_enter_netns(fd) == 0 else { result = .failure(BPFError("setns", errno: errno, name)); return }
            result = Result { try body() }
        }
        thread.start()
        done.wait()
        return try result.get()
    }
}
