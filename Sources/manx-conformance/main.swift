import ArgumentParser
import Foundation
import ManxConformance
import ManxModel
import ManxOptions

struct Conformance: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manx-conformance",
        abstract: "Run policy conformance cases against a real simulated node.")

    @Option(help: "Dataplane, or several comma-separated: bpf, iptables (nft-backed), iptables-legacy.")
    var dataplane = DataplaneList([.bpf])

    @Option(help: "Per-probe timeout in milliseconds.")
    var timeoutMs: Int = 1000

    @Option(help: "Spread the 9 pods over this many nodes (network namespaces on an underlay), created through manx-cni.")
    var nodes: Int?

    @Option(help: "Encapsulation between nodes with --nodes: none, ipip or vxlan.")
    var encap: String = "none"

    @Option(help: "Datastore with --nodes: directory, or etcd (3 members, each in a namespace on the underlay).")
    var datastore: String = "directory"

    @Argument(help: "Case folders, or folders of case folders (with an optional model.json).")
    var directories: [String]

    func run() throws {
        let modes = dataplane.choices
        guard let encapsulation = Encapsulation(rawValue: encap) else {
            throw ValidationError("--encap must be none, ipip or vxlan")
        }
        if let nodes {
            guard (1...9).contains(nodes) else { throw ValidationError("--nodes must be 1-9") }
            guard modes == [.bpf] else { throw ValidationError("--nodes runs the bpf dataplane only (routing and encapsulation are BPF)") }
        }
        guard ["directory", "etcd"].contains(datastore) else { throw ValidationError("--datastore must be directory or etcd") }
        if datastore == "etcd" && nodes == nil { throw ValidationError("--datastore etcd needs --nodes") }
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
        var options = ConformanceRunner.Options(binDirectory: bin)
        options.modes = modes
        options.timeoutMs = timeoutMs
        options.nodes = nodes
        options.encapsulation = encapsulation
        options.etcdMembers = datastore == "etcd" ? 3 : 0
        let totals = try ConformanceRunner(options: options).run(directories)
        if totals.failed > 0 { throw ExitCode(1) }
    }
}


Conformance.main()
