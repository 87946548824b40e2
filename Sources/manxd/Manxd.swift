import ArgumentParser
import Foundation
import Logging
import ManxDaemon
import ManxDataplane
import ManxDatastore
import ManxEtcd
import ManxIptables
import ManxNodeState
import ManxOptions
import ServiceLifecycle

@main
struct Manxd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manxd",
        abstract: "Manx node daemon: enforces the datastore's policy with BPF.")

    @Option(help: "Directory of YAML resources (the datastore), unless --etcd-endpoints is given.")
    var datastore: String = "/etc/manx/resources"

    @Option(help: "etcd client URLs, comma-separated (e.g. http://10.0.0.1:2379,http://10.0.0.2:2379): the cluster datastore, instead of a directory.")
    var etcdEndpoints: String?

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

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
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
        let store: any Datastore
        if let etcdEndpoints {
            store = EtcdDatastore(client: try EtcdClient(endpoints: etcdEndpoints.split(separator: ",").map(String.init)))
        } else {
            store = DirectoryDatastore(directory: datastore)
        }
        let daemon = try NodeDaemon(.init(datastore: store, paths: NodePaths(node: node), nodeName: nodeName, dataplane: kind,
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
