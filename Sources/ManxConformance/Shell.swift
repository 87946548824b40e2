import Foundation

/// Runs external commands (ip, nsenter, the project's own binaries).
enum Shell {
    struct Failure: Error, CustomStringConvertible {
        let command: String
        let status: Int32
        let output: String
        var description: String { "`\(command)` exited \(status): \(output.trimmingCharacters(in: .whitespacesAndNewlines))" }
    }

    /// Runs to completion; throws with the output when the exit status is not 0.
    @discardableResult
    static func run(_ args: [String], allowFailure: Bool = false, environment: [String: String] = [:],
                    input: String? = nil) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        if !environment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        let stdin = Pipe()
        if input != nil { p.standardInput = stdin }
        try p.run()
        if let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try stdin.fileHandleForWriting.close()
        }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let output = String(decoding: data, as: UTF8.self)
        if p.terminationStatus != 0 && !allowFailure {
            throw Failure(command: args.joined(separator: " "), status: p.terminationStatus, output: output)
        }
        return output
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
