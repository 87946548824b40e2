import ArgumentParser
import Foundation
import ManxConformance

struct Conformance: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "Run policy conformance cases against a real simulated node.")

    @Option(help: "Dataplane, or several comma-separated: bpf, iptables (nft-backed), iptables-legacy.")
    var mode: String = "bpf"

    @Option(help: "Per-probe timeout in milliseconds.")
    var timeoutMs: Int = 1000

    @Argument(help: "Case folders, or folders of case folders (with an optional model.json).")
    var directories: [String]

    func run() throws {
        let modes = mode.split(separator: ",").map(String.init)
        guard !modes.isEmpty, modes.allSatisfy(["bpf", "iptables", "iptables-legacy"].contains) else {
            throw ValidationError("--mode must be bpf, iptables or iptables-legacy (or a comma-separated list)")
        }
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        var options = ConformanceRunner.Options(binDirectory: bin)
        options.modes = modes
        options.timeoutMs = timeoutMs
        let totals = try ConformanceRunner(options: options).run(directories)
        if totals.failed > 0 { throw ExitCode(1) }
    }
}


Conformance.main()
