import Foundation
import ManxCommand
import ManxConformance
import ManxDatastore
import ManxIPAM
import ManxModel
import ManxNodeState
import XCTest

/// Real containers from Debian's podman (CNI backend, runc), on a manx
/// network: manx-cni gets only the container's name in CNI_ARGS, as from
/// any runtime that is not Kubernetes. Everything podman keeps (storage,
/// state, network configuration) is in a scratch directory of this test,
/// and podman runs in the test's node namespace, so its containers' host
/// veths and routes are there too.
final class PodmanTests: XCTestCase {
    var lab: Lab!
    var prefix = ""
    var root = ""
    var paths = NodePaths()
    var dsDir: String { root + "/datastore" }
    var datastore: DirectoryDatastore { DirectoryDatastore(directory: dsDir) }

    override func setUpWithError() throws {
        try requireKernel()
        for tool in ["podman", "runc", "busybox"] where (try? sh("which", tool)) == nil {
            XCTFail("\(tool) is not installed (tools/install-deps installs podman, runc and busybox-static)")
            throw XCTSkip("failed above")
        }
        prefix = testPrefix("pm")
        lab = Lab(prefix: prefix)
        paths = NodePaths(node: prefix)
        root = try makeScratchDirectory("\(prefix)-podman")
        for dir in ["datastore", "cni", "plugins", "storage", "run", "tmp", "rootfs/bin", "log"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(dir)", withIntermediateDirectories: true)
        }
        try createCNINode(lab)
        try datastore.write("pool.yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: main}\nspec: {cidr: 10.76.0.0/24, blockSize: 28}\n")
        // The network, as an operator writes it (docs/cni.md).
        try FileManager.default.createSymbolicLink(atPath: "\(root)/plugins/manx-cni", withDestinationPath: try productPath("manx-cni"))
        try """
        {"cniVersion": "1.0.0", "name": "manx", "plugins": [{"type": "manx-cni", "datastore": "\(dsDir)", "nodename": "\(prefix)"}]}
        """.write(toFile: "\(root)/cni/manx.conflist", atomically: true, encoding: .utf8)
        // runc: crun refuses this machine's hybrid cgroup hierarchy. The
        // ulimits: podman's defaults exceed what a test process may set.
        try """
        [network]
        network_backend = "cni"
        cni_plugin_dirs = ["\(root)/plugins"]
        network_config_dir = "\(root)/cni"
        [containers]
        default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
        [engine]
        cgroup_manager = "cgroupfs"
        events_logger = "file"
        runtime = "runc"
        """.write(toFile: "\(root)/containers.conf", atomically: true, encoding: .utf8)
        _ = try lab.spawn(in: lab.node, [try productPath("manxd"), "--datastore", dsDir, "--node", prefix, "--node-name", prefix],
                          log: "\(root)/log/manxd.log", needsPins: true)
        // The image: busybox-static alone, imported.
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: "\(root)/rootfs/bin/busybox")
        for applet in ["sh", "nc", "sleep"] {
            try FileManager.default.createSymbolicLink(atPath: "\(root)/rootfs/bin/\(applet)", withDestinationPath: "busybox")
        }
        try sh("tar", "-C", "\(root)/rootfs", "-cf", "\(root)/rootfs.tar", ".")
        try podman("import", "\(root)/rootfs.tar", "localhost/\(prefix)-busybox")
    }

    override func tearDownWithError() throws {
        guard let lab else { return }
        _ = try? podman("rm", "--all", "--force", "--time", "0")
        _ = try? podman("rmi", "--all", "--force")
        lab.teardown()
        // Podman's storage leaves overlay mounts under its root.
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        for point in mounts.split(separator: "\n").map({ $0.split(separator: " ")[1] }).filter({ $0.hasPrefix(root) }).sorted().reversed() {
            _ = try? sh("umount", String(point), allowFailure: true)
        }
        try? FileManager.default.removeItem(atPath: root)
        removeTestPins(paths)
        try? FileManager.default.removeItem(atPath: paths.stateDirectory)
    }

    /// podman with this test's configuration, in the node's namespace.
    @discardableResult
    func podman(_ args: String...) throws -> String {
        var environment = ProcessInfo.processInfo.environment
        environment["CONTAINERS_CONF"] = "\(root)/containers.conf"
        return try Command.checked(["nsenter", "--net=/run/netns/\(lab.node)", "podman", "--root", "\(root)/storage",
                                    "--runroot", "\(root)/run", "--tmpdir", "\(root)/tmp"] + args, environment: environment)
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether the client container opens a TCP connection to the port.
    func connects(_ client: String, _ address: String, _ port: Int) -> Bool {
        (try? podman("exec", client, "nc", "-w", "2", address, "\(port)")) != nil
    }

    func endpoint(_ containerID: String) throws -> WorkloadEndpoint {
        let set = try ResourceSet.decode(files: [("w.yaml", try XCTUnwrap(datastore.readIfPresent("wep-default.\(containerID).yaml")))])
        return try XCTUnwrap(set.workloadEndpoints.values.first)
    }

    func waitApplied() throws {
        let digest = try datastore.snapshot().digest
        try waitUntil("manxd applies the datastore") { (try? NodeMetadata.read(paths))?.appliedDigest == digest }
    }

    func testGlobalPolicyBetweenPodmanContainersAndAddressesReleased() throws {
        let image = "localhost/\(prefix)-busybox"
        // Two listeners that answer and close: nc's -ll with -e serves
        // connection after connection.
        let server = try podman("run", "--detach", "--name", "server", "--network", "manx", image,
                                "sh", "-c", "nc -ll -p 8080 -e /bin/sh -c 'echo 8080' & nc -ll -p 8081 -e /bin/sh -c 'echo 8081' & exec sleep 3600")
        let client = try podman("run", "--detach", "--name", "client", "--network", "manx", image, "sleep", "3600")
        let serverEndpoint = try endpoint(server)
        let clientEndpoint = try endpoint(client)
        XCTAssertEqual(serverEndpoint.orchestrator, .cni)
        XCTAssertEqual(serverEndpoint.labels, ["manx.io/container-name": "server"])
        XCTAssertEqual(clientEndpoint.profiles, ["manx"])
        let address = serverEndpoint.address.description
        // The network's profile: its containers reach each other.
        try waitUntil("the server listens") { connects("client", address, 8080) }
        XCTAssertTrue(connects("client", address, 8081))

        // A GlobalNetworkPolicy for the server: only the client, only 8080.
        let policy = """
        apiVersion: projectcalico.org/v3
        kind: GlobalNetworkPolicy
        metadata: {name: server-ingress}
        spec:
          selector: manx.io/container-name == 'server'
          ingress:
          - action: Allow
            protocol: TCP
            source: {selector: manx.io/container-name == 'client'}
            destination: {ports: [8080]}
        """
        try policy.write(toFile: "\(root)/policy.yaml", atomically: true, encoding: .utf8)
        try sh(try productPath("bpfctl"), "apply", "-f", "\(root)/policy.yaml", "--datastore", dsDir)
        try waitApplied()
        XCTAssertTrue(connects("client", address, 8080))
        XCTAssertFalse(connects("client", address, 8081), "the policy allows only 8080")
        // The server's ingress counted the refused connection: no rule of
        // the tier matched, so its default denied it.
        let dump = try JSONSerialization.jsonObject(with: Data(try sh(try productPath("bpfctl"), "dump", "--node", prefix, "-o", "json").utf8)) as? [String: Any]
        let endpoints = dump?["endpoints"] as? [[String: Any]] ?? []
        let serverView = endpoints.first { $0["workload"] as? String == "default/\(server)" }
        let ingress = (serverView?["counters"] as? [String: [String: Any]])?["ingress"]
        XCTAssertGreaterThan((ingress?["drop_default"] as? Int) ?? 0, 0, "\(ingress ?? [:])")

        // IPAM agrees: two addresses on this node, each with its endpoint.
        XCTAssertEqual(try allocatedOnNode(), 2)
        XCTAssertTrue(try sh(try productPath("bpfctl"), "ipam", "check", "--datastore", dsDir).contains("IPAM is consistent: 2 allocations"))

        // Removing the containers releases their addresses and endpoints.
        try podman("rm", "--force", "--time", "0", "server", "client")
        for id in [server, client] {
            XCTAssertEqual(try IPAM(datastore: datastore).assignments(handle: id), [], "container \(id) keeps an address")
            XCTAssertNil(try datastore.readIfPresent("wep-default.\(id).yaml"))
        }
        XCTAssertFalse(try sh("ip", "-n", lab.node, "-o", "link", "show").contains(": mx"), "a container's host veth is left")
        try waitApplied()
        XCTAssertEqual(try NodeMetadata.read(paths).endpoints.count, 0)
        XCTAssertEqual(try allocatedOnNode(), 0)
        XCTAssertNoThrow(try sh(try productPath("bpfctl"), "ipam", "check", "--datastore", dsDir))
    }

    /// What `bpfctl ipam show` says this node holds.
    func allocatedOnNode() throws -> Int? {
        let report = try JSONSerialization.jsonObject(with: Data(try sh(try productPath("bpfctl"), "ipam", "show", "--datastore", dsDir, "-o", "json").utf8))
        let nodes = (report as? [String: Any])?["nodes"] as? [[String: Any]] ?? []
        return nodes.first { $0["name"] as? String == prefix }?["allocated"] as? Int
    }
}
