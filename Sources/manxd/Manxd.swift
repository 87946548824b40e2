import ArgumentParser
import Foundation
import Logging
import ManxDaemon
import ManxDataplane
import ManxDatastore
import ManxIptables
import ManxLogging
import ManxNodeState
import ManxOptions
import ServiceLifecycle

@main
struct Manxd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manxd",
        abstract: "Manx node daemon: enforces the datastore's policy with BPF.")

    @OptionGroup var store: DatastoreOptions

    @Option(help: "Node name: pins live in /sys/fs/bpf/manx/NODE, state in /run/manx/NODE (empty: the machine's own).")
    var node: String = ""

    @Option(help: "Only pods scheduled on this Kubernetes node (spec.nodeName) are local endpoints.")
    var nodeName: String?

    @Option(help: "Dataplane: bpf, or the comparison iptables rules and ipsets through Debian's default iptables (nft) or iptables-legacy.")
    var dataplane: DataplaneChoice = .bpf

    @Option(help: "Send VXLAN through this collect_md device (created if missing) instead of building headers in BPF.")
    var vxlanDevice: String?

    @Option(help: "Conntrack entries each endpoint may hold; when its table is full its new flows are refused (BPF dataplane; applies to endpoints created from then on).")
    var conntrackBudget: Int = Dataplane.defaultConntrackBudget

    @Flag(help: "Apply once and exit (exit status 1 if the batch was rejected).")
    var once = false

    @Flag(help: "Detach all programs and remove all pins of this node, then exit.")
    var uninstall = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    @Option(help: "Log format: text (key=value), or json (one object per line).")
    var logFormat: LogFormat = .text

    enum LogFormat: String, ExpressibleByArgument { case text, json }

    func run() async throws {
        let (level, format) = (logLevel, logFormat)
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = format == .json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "manxd")
        let kind: DataplaneKind = switch dataplane {
        case .bpf: .bpf
        case .iptables: .iptables(.nft)
        case .iptablesLegacy: .iptables(.legacy)
        }
        guard (1...(1 << 24)).contains(conntrackBudget) else { throw ValidationError("--conntrack-budget must be 1...16777216") }
        let daemon = try NodeDaemon(.init(datastore: try store.open(), paths: NodePaths(node: node), nodeName: nodeName, dataplane: kind,
                                            vxlanDevice: vxlanDevice, conntrackBudget: conntrackBudget),
                                    logger: logger)
        if uninstall {
            try await daemon.uninstall()
            return
        }
        if once {
            if await !daemon.syncOnce() { throw ExitCode(1) }
            return
        }
        let group = ServiceGroup(services: [daemon], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}

/// An unknown level is refused with the levels that exist (it used to
/// become `info` silently).
extension Logger.Level: @retroactive ExpressibleByArgument {}
