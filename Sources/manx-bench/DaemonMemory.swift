import ArgumentParser
import Foundation
import Glibc
import ManxCommand
import ManxConformance

/// manxd's peak resident memory and wall time for one full load (`--once`)
/// of N policies over 100 pods that are peers elsewhere, from one YAML file
/// in a directory datastore, on a node namespace of its own.
struct DaemonMemory: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "daemon-memory",
                                                    abstract: "manxd's peak RSS and wall time loading N policies once.")

    @Option(help: "Comma-separated policy counts.")
    var policies: String = "10000,100000"

    func run() throws {
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        // The peak of the children waited for so far: counts in ascending
        // order, so each row's peak is its own run's.
        let counts = policies.split(separator: ",").compactMap { Int($0) }.sorted()
        var rows: [[String]] = []
        for n in counts {
            let prefix = "mxdm\(getpid() % 1000)"
            let lab = Lab(prefix: prefix)
            let scratch = try makeScratchDirectory(prefix)
            defer {
                lab.teardown()
                try? FileManager.default.removeItem(atPath: scratch)
                try? FileManager.default.removeItem(atPath: "/sys/fs/bpf/manx/\(prefix)")
                try? FileManager.default.removeItem(atPath: "/run/manx/\(prefix)")
            }
            try lab.createNode()
            let resources = ControlPlane.resources(policies: n, endpoints: 100)
                .replacingOccurrences(of: ControlPlane.interfaceAnnotation, with: "", options: .regularExpression)
            try FileManager.default.createDirectory(atPath: "\(scratch)/ds", withIntermediateDirectories: true)
            try resources.write(toFile: "\(scratch)/ds/all.yaml", atomically: true, encoding: .utf8)
            let t0 = Date()
            _ = try Command.checked(["ip", "netns", "exec", lab.node, bin + "/manxd", "--once", "--datastore", "\(scratch)/ds",
                                     "--node", prefix, "--log-level", "warning"])
            let seconds = Date().timeIntervalSince(t0)
            var usage = rusage()
            getrusage(Int32(RUSAGE_CHILDREN.rawValue), &usage)
            rows.append(["\(n)", String(format: "%.2f", seconds), String(format: "%.1f", Double(usage.ru_maxrss) / 1024)])
        }
        print(Markdown.table(["policies", "manxd --once s", "peak RSS MiB"], rows))
    }
}
