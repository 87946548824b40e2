import Foundation
import ManxCommand

/// Runs external commands (ip, nsenter, the project's own binaries) for
/// the simulated nodes and clusters.
enum Shell {
    /// Runs to completion and returns stdout and stderr; throws
    /// Command.Failure unless it exits 0 or `allowFailure`.
    @discardableResult
    static func run(_ args: [String], allowFailure: Bool = false, environment: [String: String] = [:],
                    input: String? = nil) throws -> String {
        let env = environment.isEmpty ? nil : ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let out = try Command.run(args, input: input, environment: env)
        if !out.succeeded && !allowFailure {
            throw Command.Failure(command: args.joined(separator: " "), status: out.status, message: out.message)
        }
        return out.stdout + out.stderr
    }

    /// Starts a long-running process; its output goes to `log`.
    static func start(_ args: [String], log: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        return p
    }
}
