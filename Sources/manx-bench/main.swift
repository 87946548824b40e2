import ArgumentParser

struct ManxBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manx-bench",
        abstract: "Manx benchmarks (run through bench/ scripts).",
        subcommands: [PacketCost.self, Traffic.self, ControlPlane.self, EndpointLatency.self, CNILatency.self, EncapThroughput.self, DaemonMemory.self])
}

ManxBench.main()
