import ArgumentParser
import Foundation
import ManxConformance

struct Conformance: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "Run policy conformance cases against a real simulated node.")

    @Option(help: "Dataplane: bpf, iptables (nft-backed) or iptables-legacy.")
    var mode: String = "bpf"

    @Option(help: "Per-probe timeout in milliseconds.")
    var timeoutMs: Int = 1000

    @Argument(help: "Case folders, or folders of case folders (with an optional model.json).")
    var directories: [String]

    func run() throws {
        guard ["bpf", "iptables", "iptables-legacy"].contains(mode) else {
            throw ValidationError("--mode must be bpf, iptables or iptables-legacy")
        }
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        var options = ConformanceRunner.Options(binDirectory: bin)
        options.mode = mode
        options.timeoutMs = timeoutMs
        let totals = try ConformanceRunner(options: options).run(directories)
        if totals.failed > 0 { throw ExitCode(1) }
    }
}


Conformance.main()
