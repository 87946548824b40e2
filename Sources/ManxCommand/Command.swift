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
    public static func run(_ args: [String], input: String? = nil, environment: [String: String]? = nil) throws(LaunchFailure) -> Output {
        guard let program = args.first, let executable = resolve(program) else {
            throw LaunchFailure(description: "cannot find the program '\(args.first ?? "")' (PATH and \(fallbackPath.joined(separator: ":")))")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = Array(args.dropFirst())
        if let environment { process.environment = environment }
        let out = Pipe(), err = Pipe(), inp = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = inp
        do {
            try process.run()
        } catch {
            throw LaunchFailure(description: "cannot run \(executable): \(error)")
        }
        // Read stderr on another thread so that neither pipe can fill up
        // and stall the child.
        let errData = DataBox()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData.data = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        if let input {
            // A child that exits without reading its input must not kill us
            // with SIGPIPE.
            signal(SIGPIPE, SIG_IGN)
            try? inp.fileHandleForWriting.write(contentsOf: Data(input.utf8))
        }
        try? inp.fileHandleForWriting.close()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Output(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData.data, as: UTF8.self))
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

private final class DataBox: @unchecked Sendable {
    var data = Data()
}
