import ArgumentParser
import Foundation
import ManxConformance
import ManxModel

/// `tools/cluster`: a simulated multi-node cluster to look at and poke.
struct ManxCluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manx-cluster",
        abstract: "Bring a simulated cluster up (nodes as network namespaces running manxd, pods through manx-cni), or tear it down.",
        subcommands: [Up.self, Down.self])

    struct Up: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create nodes, start manxd on each, add pods through manx-cni.")

        @Option(help: "Name prefix of every namespace, pin and file.") var prefix = "mxcl"
        @Option(help: "Number of nodes.") var nodes = 3
        @Option(help: "Encapsulation between nodes: none, ipip or vxlan.") var encap = "ipip"
        @Option(help: "Encapsulate Always or CrossSubnet (nodes alternate between two subnets with CrossSubnet).") var mode = "Always"
        @Option(help: "Pods per node (namespace demo, labelled app=pod-N).") var podsPerNode = 2
        @Flag(help: "SNAT pod traffic leaving the pool to the node address.") var natOutgoing = false
        @Option(help: "Datastore: directory, or etcd (three members, each in a namespace on the underlay).") var datastore = "directory"

        func run() throws {
            guard let encapsulation = Encapsulation(rawValue: encap) else { throw ValidationError("--encap must be none, ipip or vxlan") }
            guard let encapMode = EncapMode(rawValue: mode), encapMode != .never else { throw ValidationError("--mode must be Always or CrossSubnet") }
            guard (1...9).contains(nodes) else { throw ValidationError("--nodes must be 1-9") }
            guard podsPerNode >= 0 else { throw ValidationError("--pods-per-node must not be negative") }
            guard ["directory", "etcd"].contains(datastore) else { throw ValidationError("--datastore must be directory or etcd") }
            var options = Cluster.Options(binDirectory: binDirectory())
            options.nodes = nodes
            options.encapsulation = encapsulation
            options.encapMode = encapMode
            options.subnets = encapMode == .crossSubnet ? 2 : 1
            options.natOutgoing = natOutgoing
            options.etcdMembers = datastore == "etcd" ? 3 : 0
            let cluster = Cluster(prefix: prefix, options: options)
            Cluster.teardown(prefix: prefix)
            do {
                try cluster.up()
                var pods = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n"
                let keys = (0..<(nodes * podsPerNode)).map { "demo/pod-\($0 + 1)" }
                for key in keys {
                    let name = key.split(separator: "/")[1]
                    pods += "---\napiVersion: v1\nkind: Pod\nmetadata: {name: \(name), namespace: demo, labels: {app: \(name)}}\n"
                }
                try cluster.datastore.write("pods.yaml", pods)
                print("node       underlay     pod          address      host interface")
                for (i, key) in keys.enumerated() {
                    let node = cluster.nodeNames[i % nodes]
                    let pod = try cluster.addPod(key, node: node)
                    let address = cluster.nodeAddress(i % nodes + 1).address
                    print("\(node.padding(10)) \(address.padding(12)) \(key.padding(12)) \(pod.ip.padding(12)) \(pod.hostInterface)")
                }
            } catch {
                Cluster.teardown(prefix: prefix)
                throw error
            }
            print("""

            Datastore: \(cluster.datastore.description)   files written: \(cluster.datastore.directory)   logs: /tmp/\(prefix)-logs
            Pod namespaces: ip netns exec \(prefix)-demo-pod-1 ping <address>
            Node maps:      nsenter --net=/run/netns/\(prefix)-n1 bpfctl dump --node \(prefix)-n1
            Tear down:      tools/cluster down --prefix \(prefix)
            """)
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the daemons, remove namespaces, pins, state and datastore.")
        @Option(help: "Name prefix the cluster was created with.") var prefix = "mxcl"
        func run() { Cluster.teardown(prefix: prefix) }
    }
}

func binDirectory() -> String {
    URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

ManxCluster.main()
