import CSpawn
import Foundation

/// Runs an external program (ip, iptables, nsenter, a CNI plugin) to
/// completion, with stdout and stderr kept apart. The one place Manx starts
/// short-lived processes.
public enum Command {
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String

        public var succeeded: Bool { status == 0 }
        /// stderr, else stdout, trimmed: what a failing command said.
        public var message: String {
            let err = stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            return err.isEmpty ? stdout.trimmingCharacters(in: .whitespacesAndNewlines) : err
        }
    }

    /// The program could not be started.
    public struct LaunchFailure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The program ran and exited with a status other than 0.
    public struct Failure: Error, CustomStringConvertible {
        public let command: String
        public let status: Int32
        public let message: String
        public var description: String { "`\(command)` exited \(status): \(message)" }

        public init(command: String, status: Int32, message: String) {
            self.command = command
            self.status = status
            self.message = message
        }
    }

    /// Where programs are looked up besides PATH: container runtimes often
    /// start plugins with a minimal PATH.
    public static let fallbackPath = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    public static func resolve(_ program: String) -> String? {
        if program.contains("/") { return FileManager.default.isExecutableFile(atPath: program) ? program : nil }
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        for dir in path + fallbackPath where !dir.isEmpty {
            let candidate = dir + "/" + program
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Runs `args[0]` (looked up in PATH) with the other arguments.
    /// `environment` replaces the process's environment when given.
    ///
    /// posix_spawn and waitpid, not Foundation's `Process`: its
    /// `waitUntilExit` polls a run loop every 50 ms, which made every
    /// `ip` command of a CNI ADD cost 50 ms. The child gets the default
    /// disposition of SIGPIPE (this process ignores it) and no descriptor
    /// but its three pipes.
    public static func run(_ args: [String], input: String? = nil, environment: [String: String]? = nil) throws(LaunchFailure) -> Output {
        guard let program = args.first, let executable = resolve(program) else {
            throw LaunchFailure(description: "cannot find the program '\(args.first ?? "")' (PATH and \(fallbackPath.joined(separator: ":")))")
        }
        // A child that exits without reading its input must not kill us
        // with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        var fds: [Int32] = [-1, -1, -1, -1, -1, -1] // stdin r/w, stdout r/w, stderr r/w
        defer { for fd in fds where fd >= 0 { close(fd) } }
        for i in stride(from: 0, to: 6, by: 2) {
            let made = fds.withUnsafeMutableBufferPointer { manx_pipe_cloexec($0.baseAddress! + i) }
            guard made == 0 else { throw LaunchFailure(description: "cannot run \(executable): pipe2: \(String(cString: strerror(errno)))") }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fds[3], 1)
        posix_spawn_file_actions_adddup2(&actions, fds[5], 2)
        manx_spawn_close_from(&actions, 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t(), mask = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        sigemptyset(&mask)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = args.map { strdup($0) } + [nil]
        let envp = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv + envp { free(p) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard spawned == 0 else { throw LaunchFailure(description: "cannot run \(executable): \(String(cString: strerror(spawned)))") }
        for i in [0, 3, 5] {
            close(fds[i])
            fds[i] = -1
        }

        // The input in, stdout and stderr out, at once: neither side can
        // stall on a full pipe.
        var pending = Array((input ?? "").utf8)[...]
        if pending.isEmpty {
            close(fds[1])
            fds[1] = -1
        } else {
            _ = fcntl(fds[1], F_SETFL, O_NONBLOCK) // a write takes what fits
        }
        var out: [UInt8] = [], err: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while fds[2] >= 0 || fds[4] >= 0 {
            var polled = [fds[1], fds[2], fds[4]].enumerated().map { i, fd in
                pollfd(fd: fd, events: Int16(i == 0 ? POLLOUT : POLLIN), revents: 0) // a negative fd is skipped
            }
            guard poll(&polled, 3, -1) >= 0 || errno == EINTR else { break }
            if polled[0].revents != 0 {
                let n = pending.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
                if n > 0 { pending = pending.dropFirst(n) }
                if (n < 0 && errno != EAGAIN && errno != EINTR) || pending.isEmpty {
                    close(fds[1])
                    fds[1] = -1
                }
            }
            for (slot, index) in [(1, 2), (2, 4)] where polled[slot].revents != 0 {
                let n = read(fds[index], &buffer, buffer.count)
                if n > 0 {
                    if index == 2 { out += buffer[..<n] } else { err += buffer[..<n] }
                } else if n == 0 || errno != EINTR {
                    close(fds[index])
                    fds[index] = -1
                }
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // Exited: its status; killed by a signal: 128 + the signal, as shells report it.
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Output(status: code, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
    }
}

extension Command {
    /// Runs and returns stdout; throws `Failure` (with what the program
    /// said) unless it exits 0.
    @discardableResult
    public static func checked(_ args: [String], input: String? = nil, environment: [String: String]? = nil) throws -> String {
        let out = try run(args, input: input, environment: environment)
        guard out.succeeded else { throw Failure(command: args.joined(separator: " "), status: out.status, message: out.message) }
        return out.stdout
    }
}

extension Command {
    /// Runs every command at once, each on a thread of its own (a command
    /// blocks its thread in poll and waitpid), and returns their outputs
    /// in order: probes that wait out timeouts overlap instead of adding up.
    public static func runConcurrently(_ commands: [[String]]) throws(LaunchFailure) -> [Output] {
        let results = Results(count: commands.count)
        let group = DispatchGroup()
        for (i, args) in commands.enumerated() {
            group.enter()
            Thread.detachNewThread {
                results.set(i, Result { () throws(LaunchFailure) in try run(args) })
                group.leave()
            }
        }
        group.wait()
        return try results.all()
    }

    private final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [Result<Output, LaunchFailure>?]
        init(count: Int) { values = Array(repeating: nil, count: count) }
        func set(_ i: Int, _ value: Result<Output, LaunchFailure>) { lock.withLock { values[i] = value } }
        func all() throws(LaunchFailure) -> [Output] {
            let values = lock.withLock { self.values }
            return try values.map { value throws(LaunchFailure) in try value!.get() }
        }
    }
}
