import Foundation
import ManxCNI
import ManxConformance
import ManxDataplane
import ManxDatastore
import ManxIPAM
import ManxModel
import ManxNodeState
import XCTest

/// manx-cni on a simulated node: a node namespace running a real manxd,
/// pods' namespaces, the plugin run in the node namespace as the container
/// runtime would, and Debian's reference plugins chained through CNIRuntime.
final class CNITests: XCTestCase {
    var lab: Lab!
    var prefix = ""
    var dsDir = ""
    var cacheDir = ""
    var logDir = ""
    var paths = NodePaths()
    var datastore: DirectoryDatastore { DirectoryDatastore(directory: dsDir) }

    static let concurrentPods = 12

    /// Namespaces, pods and pools. "tiny" has two usable addresses.
    static func resources() -> String {
        var docs = [
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: small, annotations: {cni.projectcalico.org/ipv4pools: '[\"tiny\"]'}}",
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: main}\nspec: {cidr: 10.77.0.0/24, blockSize: 28}",
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: tiny}\nspec: {cidr: 10.78.0.0/30, blockSize: 30}",
        ]
        func pod(_ name: String, namespace: String = "demo", annotations: [String: String] = [:]) -> String {
            let a = annotations.sorted { $0.key < $1.key }.map { "\($0.key): '\($0.value)'" }.joined(separator: ", ")
            return "apiVersion: v1\nkind: Pod\nmetadata: {name: \(name), namespace: \(namespace), labels: {app: \(name)}, annotations: {\(a)}}"
        }
        for name in ["a", "b", "late", "chain", "chainbad"] { docs.append(pod(name)) }
        for name in ["t1", "t2", "t3"] { docs.append(pod(name, annotations: [IPAM.poolsAnnotation: #"["tiny"]"#])) }
        docs.append(pod("nopool", annotations: [IPAM.poolsAnnotation: #"["nosuch"]"#]))
        docs.append(pod("fixed", annotations: [IPAM.addressesAnnotation: #"["10.77.0.200"]"#]))
        docs.append(pod("fixed2", annotations: [IPAM.addressesAnnotation: #"["10.77.0.200"]"#]))
        docs.append(pod("outside", annotations: [IPAM.addressesAnnotation: #"["10.79.0.5"]"#]))
        docs.append(pod("s1", namespace: "small"))
        for i in 1...concurrentPods { docs.append(pod("c\(i)")) }
        return docs.joined(separator: "\n---\n") + "\n"
    }

    override func setUpWithError() throws {
        try requireKernel()
        prefix = testPrefix("cni")
        lab = Lab(prefix: prefix)
        paths = NodePaths(node: prefix)
        dsDir = try makeScratchDirectory("\(prefix)-ds")
        cacheDir = try makeScratchDirectory("\(prefix)-cache")
        logDir = try makeScratchDirectory("\(prefix)-log")
        try createCNINode(lab)
        try datastore.write("resources.yaml", Self.resources())
        _ = try lab.spawn(in: lab.node, [try binary("manxd"), "--datastore", dsDir, "--node", prefix, "--node-name", prefix],
                          log: "\(logDir)/manxd.log", needsPins: true)
        try waitApplied()
    }

    override func tearDownWithError() throws {
        lab?.teardown()
        for path in [dsDir, cacheDir, logDir, paths.pinRoot, paths.stateDirectory] where !path.isEmpty {
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    // MARK: Helpers

    /// The package's executables next to this test bundle (the build that
    /// made the tests), else the default build directory.
    func binary(_ name: String) throws -> String {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        for dir in [exe.deletingLastPathComponent(), exe.deletingLastPathComponent().deletingLastPathComponent()] {
            let path = dir.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return try productPath(name)
    }

    func waitApplied() throws {
        let digest = try datastore.snapshot().digest
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let m = try? NodeMetadata.read(paths), m.appliedDigest == digest || m.rejectedDigest == digest { return }
            usleep(20_000)
        }
        let log = (try? String(contentsOfFile: "\(logDir)/manxd.log", encoding: .utf8)) ?? ""
        XCTFail("manxd did not apply within 20s; log:\n\(log)")
        throw XCTSkip("failed above")
    }

    func conf(_ extra: String = "", node: String? = nil) -> String {
        #"{"cniVersion": "1.0.0", "name": "manx", "type": "manx-cni", "datastore": "\#(dsDir)", "nodename": "\#(node ?? prefix)"\#(extra)}"#
    }

    func podNetns(_ pod: String) throws -> String {
        let name = "\(prefix)-\(pod)"
        try lab.createNamespace(name)
        return "/run/netns/\(name)"
    }

    struct Call {
        var stdout: String
        var stderr: String
        var status: Int32
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(stdout.utf8))) as? [String: Any] ?? [:] }
        var code: Int? { json["code"] as? Int }
        var msg: String { json["msg"] as? String ?? "" }
    }

    /// Starts manx-cni in the node's network namespace.
    func start(_ command: String, container: String, netns: String, pod: String?, namespace: String = "demo",
               ifname: String = "eth0", conf: String) throws -> (Process, Pipe, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        p.arguments = ["--net=/run/netns/\(lab.node)", try binary("manx-cni")]
        var env = ProcessInfo.processInfo.environment
        env["CNI_COMMAND"] = command
        env["CNI_CONTAINERID"] = container
        env["CNI_NETNS"] = netns
        env["CNI_IFNAME"] = ifname
        env["CNI_PATH"] = "/usr/lib/cni"
        env["CNI_ARGS"] = pod.map { "IgnoreUnknown=1;K8S_POD_NAMESPACE=\(namespace);K8S_POD_NAME=\($0)" } ?? ""
        p.environment = env
        let input = Pipe(), output = Pipe(), errors = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = errors
        try p.run()
        input.fileHandleForWriting.write(Data(conf.utf8))
        try input.fileHandleForWriting.close()
        return (p, output, errors)
    }

    func finish(_ started: (Process, Pipe, Pipe)) -> Call {
        let (p, output, errors) = started
        let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let err = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return Call(stdout: out, stderr: err, status: p.terminationStatus)
    }

    @discardableResult
    func cni(_ command: String, container: String, netns: String, pod: String?, namespace: String = "demo",
             ifname: String = "eth0", conf: String? = nil) throws -> Call {
        finish(try start(command, container: container, netns: netns, pod: pod, namespace: namespace, ifname: ifname,
                         conf: conf ?? self.conf()))
    }

    func hostLinkExists(_ name: String) -> Bool {
        (try? sh("ip", "-n", lab.node, "link", "show", "dev", name)) != nil
    }

    func allocations(_ container: String) throws -> [IPAMAssignment] {
        try IPAM(datastore: datastore).assignments(handle: container)
    }

    /// No veth, no WorkloadEndpoint, no address for the container.
    func assertNothingLeft(container: String, pod: String, namespace: String = "demo", file: StaticString = #filePath, line: UInt = #line) throws {
        let host = PodInterface.hostName(namespace: namespace, pod: pod)
        XCTAssertFalse(hostLinkExists(host), "veth \(host) is left behind", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dsDir)/wep-\(namespace).\(pod).yaml"), "WorkloadEndpoint file left", file: file, line: line)
        XCTAssertEqual(try allocations(container), [], "allocation left", file: file, line: line)
        let links = try sh("ip", "-n", lab.node, "-o", "link", "show")
        XCTAssertFalse(links.contains(": mx"), "a pod veth is left on the node:\n\(links)", file: file, line: line)
    }

    func address(_ result: [String: Any]) -> String {
        let ips = result["ips"] as? [[String: Any]] ?? []
        return String((ips.first?["address"] as? String ?? "").split(separator: "/").first ?? "")
    }

    // MARK: Tests

    func testAddCheckDelLifecycle() throws {
        let version = try cni("VERSION", container: "", netns: "", pod: nil, conf: "{\"cniVersion\":\"1.0.0\"}")
        XCTAssertEqual(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                       #"{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}"#)

        let netns = try podNetns("a")
        let add = try cni("ADD", container: "ctr-a", netns: netns, pod: "a", conf: conf(#", "mtu": 1450"#))
        XCTAssertEqual(add.status, 0, add.stdout + add.stderr)
        XCTAssertEqual(add.stderr, "")
        let result = add.json
        let host = PodInterface.hostName(namespace: "demo", pod: "a")
        XCTAssertEqual(host.count, 15)
        XCTAssertTrue(host.hasPrefix("mx"))
        XCTAssertEqual(result["cniVersion"] as? String, "1.0.0")
        let interfaces = try XCTUnwrap(result["interfaces"] as? [[String: Any]])
        XCTAssertEqual(interfaces.count, 2)
        XCTAssertEqual(interfaces[0]["name"] as? String, host)
        XCTAssertNil(interfaces[0]["sandbox"])
        XCTAssertEqual(interfaces[1]["name"] as? String, "eth0")
        XCTAssertEqual(interfaces[1]["sandbox"] as? String, netns)
        let podMAC = try XCTUnwrap(interfaces[1]["mac"] as? String)
        let hostMAC = try XCTUnwrap(interfaces[0]["mac"] as? String)
        let ips = try XCTUnwrap(result["ips"] as? [[String: Any]])
        XCTAssertEqual(ips.first?["address"] as? String, "10.77.0.1/32")
        XCTAssertEqual(ips.first?["gateway"] as? String, "169.254.1.1")
        XCTAssertEqual(ips.first?["interface"] as? Int, 1)
        XCTAssertEqual((result["routes"] as? [[String: Any]])?.first?["dst"] as? String, "0.0.0.0/0")
        XCTAssertEqual((result["routes"] as? [[String: Any]])?.first?["gw"] as? String, "169.254.1.1")
        XCTAssertNotNil(result["dns"] as? [String: Any])

        // The kernel: the pod side, the host side and the node's route.
        let podName = "\(prefix)-a"
        let podLink = try sh("ip", "-n", podName, "-o", "addr", "show", "dev", "eth0")
        XCTAssertTrue(podLink.contains("inet 10.77.0.1/32"), podLink)
        XCTAssertTrue(try sh("ip", "-n", podName, "link", "show", "dev", "eth0").contains("mtu 1450"))
        XCTAssertTrue(try sh("ip", "-n", podName, "link", "show", "dev", "eth0").lowercased().contains(podMAC))
        let routes = try sh("ip", "-n", podName, "route")
        XCTAssertTrue(routes.contains("default via 169.254.1.1 dev eth0"), routes)
        XCTAssertTrue(routes.contains("169.254.1.1 dev eth0 scope link"), routes)
        let hostLink = try sh("ip", "-n", lab.node, "-d", "link", "show", "dev", host)
        XCTAssertTrue(hostLink.contains("mtu 1450") && hostLink.contains("alias ctr-a") && hostLink.contains(hostMAC), hostLink)
        XCTAssertTrue(try sh("ip", "-n", lab.node, "route", "show", "10.77.0.1").contains("dev \(host)"))
        XCTAssertEqual(try sh("ip", "netns", "exec", lab.node, "cat", "/proc/sys/net/ipv4/conf/\(host)/proxy_arp"), "1\n")
        XCTAssertEqual(try sh("ip", "netns", "exec", lab.node, "cat", "/proc/sys/net/ipv4/neigh/\(host)/proxy_delay"), "0\n")
        // Traffic: the gateway resolves by proxy ARP to the host side, and
        // the node's own address answers.
        XCTAssertNoThrow(try sh("ip", "netns", "exec", podName, "ping", "-c", "1", "-W", "2", "10.98.0.1"))
        let neighbours = try sh("ip", "-n", podName, "neigh", "show", "169.254.1.1")
        XCTAssertTrue(neighbours.contains("lladdr \(hostMAC)"), neighbours)

        // The endpoint in the datastore, and manxd enforcing on it.
        let wep = try String(contentsOfFile: "\(dsDir)/wep-demo.a.yaml", encoding: .utf8)
        XCTAssertEqual(wep, """
            apiVersion: projectcalico.org/v3
            kind: WorkloadEndpoint
            metadata:
              name: "\(prefix)-k8s-a-eth0"
              namespace: "demo"
            spec:
              node: "\(prefix)"
              orchestrator: k8s
              pod: "a"
              endpoint: "eth0"
              containerID: "ctr-a"
              interfaceName: "\(host)"
              ipNetworks: ["10.77.0.1/32"]
              mac: "\(podMAC)"

            """)
        // ADD answered once manxd published the endpoint as enforced on
        // this very interface; the metadata of that pass follows it.
        let status = try XCTUnwrap(EndpointStatus.read(paths, workload: "demo/a"))
        XCTAssertEqual(status.interface, host)
        XCTAssertEqual(status.ip, "10.77.0.1")
        try waitApplied()
        let meta = try NodeMetadata.read(paths)
        XCTAssertTrue(meta.endpoints.contains { $0.workload == "demo/a" && $0.interface == host && $0.ip == "10.77.0.1" && $0.ifindex == status.ifindex })
        XCTAssertTrue(try sh("tc", "-n", lab.node, "filter", "show", "dev", host, "ingress").contains("bpf"))
        XCTAssertEqual(try allocations("ctr-a").map(\.address.description), ["10.77.0.1"])

        // CHECK with the result as prevResult.
        let checkConf = conf(", \"prevResult\": \(add.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")
        let check = try cni("CHECK", container: "ctr-a", netns: netns, pod: "a", conf: checkConf)
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        XCTAssertEqual(check.stdout, "")

        // A retried ADD of the same container is idempotent.
        let again = try cni("ADD", container: "ctr-a", netns: netns, pod: "a", conf: conf(#", "mtu": 1450"#))
        XCTAssertEqual(again.status, 0, again.stdout)
        XCTAssertEqual(address(again.json), "10.77.0.1")
        let againConf = conf(", \"prevResult\": \(again.stdout.trimmingCharacters(in: .whitespacesAndNewlines))")

        // CHECK sees what changed.
        try sh("ip", "-n", podName, "addr", "del", "10.77.0.1/32", "dev", "eth0")
        let broken = try cni("CHECK", container: "ctr-a", netns: netns, pod: "a", conf: againConf)
        XCTAssertEqual(broken.status, 1)
        XCTAssertEqual(broken.code, 111)
        XCTAssertTrue(broken.msg.contains("eth0 in \(netns) has no IPv4 address, not 10.77.0.1/32"), broken.msg)
        let other = try cni("CHECK", container: "ctr-other", netns: netns, pod: "a", conf: againConf)
        XCTAssertEqual(other.code, 111)
        XCTAssertTrue(other.msg.contains("IPAM holds no address for container ctr-other, not 10.77.0.1"), other.msg)
        XCTAssertTrue(other.msg.contains("belongs to container ctr-a, not ctr-other"), other.msg)

        // DEL of another container of the same pod touches nothing.
        XCTAssertEqual(try cni("DEL", container: "ctr-other", netns: netns, pod: "a").status, 0)
        XCTAssertTrue(hostLinkExists(host))
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dsDir)/wep-demo.a.yaml"))

        // DEL, twice; the second finds nothing and succeeds.
        for _ in 0..<2 {
            let del = try cni("DEL", container: "ctr-a", netns: netns, pod: "a", conf: againConf)
            XCTAssertEqual(del.status, 0, del.stdout + del.stderr)
            XCTAssertEqual(del.stdout, "")
            try assertNothingLeft(container: "ctr-a", pod: "a")
        }
        try waitApplied()
        XCTAssertFalse(try NodeMetadata.read(paths).endpoints.contains { $0.workload == "demo/a" })

        // DEL without pod arguments (and with the netns gone) finds the
        // endpoint by container id.
        // (Older CNI versions: results name the IP version; no CHECK before 0.4.0.)
        let netnsB = try podNetns("b")
        let conf031 = conf().replacingOccurrences(of: #""cniVersion": "1.0.0""#, with: #""cniVersion": "0.3.1""#)
        let addB = try cni("ADD", container: "ctr-b", netns: netnsB, pod: "b", conf: conf031)
        XCTAssertEqual(addB.status, 0, addB.stdout)
        XCTAssertEqual(addB.json["cniVersion"] as? String, "0.3.1")
        XCTAssertEqual((addB.json["ips"] as? [[String: Any]])?.first?["version"] as? String, "4")
        let check031 = try cni("CHECK", container: "ctr-b", netns: netnsB, pod: "b", conf: conf031)
        XCTAssertEqual(check031.code, 1)
        XCTAssertEqual(check031.msg, "CHECK needs cniVersion 0.4.0 or later, got 0.3.1")
        XCTAssertEqual(check031.json["cniVersion"] as? String, "0.3.1")
        try sh("ip", "netns", "del", "\(prefix)-b")
        let delB = try cni("DEL", container: "ctr-b", netns: netnsB, pod: nil)
        XCTAssertEqual(delB.status, 0, delB.stdout)
        try assertNothingLeft(container: "ctr-b", pod: "b")
    }

    /// A runtime that is not Kubernetes (podman passes only the container's
    /// name as K8S_POD_NAME): a workload of orchestrator cni in namespace
    /// default, named by its container ID, labelled with its name, with the
    /// network's profile, which the first ADD creates.
    func testContainerOfAnotherRuntime() throws {
        let netns = try podNetns("web")
        let added = try runWithArgs("IgnoreUnknown=1;K8S_POD_NAME=web", netns: netns, container: "cafe01")
        XCTAssertEqual(added.status, 0, added.stdout + added.stderr)
        let host = PodInterface.hostName(namespace: "default", pod: "cafe01")
        let wep = try String(contentsOfFile: "\(dsDir)/wep-default.cafe01.yaml", encoding: .utf8)
        XCTAssertTrue(wep.contains("name: \"\(prefix)-cni-cafe01-eth0\""), wep)
        XCTAssertTrue(wep.contains("    \"manx.io/container-name\": \"web\""), wep)
        XCTAssertTrue(wep.contains("orchestrator: cni\n  workload: \"cafe01\""), wep)
        XCTAssertTrue(wep.contains("profiles: [\"manx\"]"), wep)
        let profile = try String(contentsOfFile: "\(dsDir)/profile-manx.yaml", encoding: .utf8)
        XCTAssertEqual(try ResourceSet.decode(files: [("p.yaml", profile)]).profiles["manx"]?.labelsToApply, ["manx": ""])
        let status = try XCTUnwrap(EndpointStatus.read(paths, workload: "default/cafe01"))
        XCTAssertEqual(status.interface, host)
        // CHECK and DEL find it by the same arguments; DEL leaves nothing.
        let check = try runWithArgs("IgnoreUnknown=1;K8S_POD_NAME=web", netns: netns, container: "cafe01", command: "CHECK")
        XCTAssertEqual(check.status, 0, check.stdout)
        let del = try runWithArgs("IgnoreUnknown=1;K8S_POD_NAME=web", netns: netns, container: "cafe01", command: "DEL")
        XCTAssertEqual(del.status, 0, del.stdout)
        try assertNothingLeft(container: "cafe01", pod: "cafe01", namespace: "default")
        // The profile stays for the network's next container.
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dsDir)/profile-manx.yaml"))
    }

    func testInvalidInputsAreRejectedPrecisely() throws {
        let netns = try podNetns("a")
        // Missing netns.
        let missing = try cni("ADD", container: "ctr-x", netns: "/run/netns/\(prefix)-nope", pod: "a")
        XCTAssertEqual(missing.status, 1)
        XCTAssertEqual(missing.code, 3)
        XCTAssertEqual(missing.msg, "netns /run/netns/\(prefix)-nope does not exist")
        // Malformed JSON: says what and where.
        let malformed = try cni("ADD", container: "ctr-x", netns: netns, pod: "a", conf: "{\"cniVersion\": \"1.0.0\",\n \"name\": manx}")
        XCTAssertEqual(malformed.code, 6)
        XCTAssertEqual(malformed.msg, "the network configuration on stdin is not valid JSON: invalid value at line 2, column 10")
        XCTAssertEqual(try cni("ADD", container: "ctr-x", netns: netns, pod: "a", conf: "[1]").msg,
                       "the network configuration on stdin must be a JSON object, got a list")
        // A pod's namespace without its name.
        let noName = try runWithArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=demo", netns: netns)
        XCTAssertEqual(noName.code, 4)
        XCTAssertEqual(noName.msg, "CNI_ARGS has K8S_POD_NAMESPACE but no K8S_POD_NAME (got 'IgnoreUnknown=1;K8S_POD_NAMESPACE=demo')")
        // Another runtime's container is named by its ID, which must fit a
        // WorkloadEndpoint's name; its network names its profile.
        let upper = finish(try start("ADD", container: "Ctr_X", netns: netns, pod: nil, conf: conf()))
        XCTAssertEqual(upper.code, 4)
        XCTAssertTrue(upper.msg.hasPrefix("CNI_CONTAINERID 'Ctr_X' names the WorkloadEndpoint of a container without K8S_POD_NAMESPACE, so it must be at most 200 lowercase"), upper.msg)
        let badNetwork = finish(try start("ADD", container: "ctr-x", netns: netns, pod: nil,
                                          conf: conf().replacingOccurrences(of: #""name": "manx""#, with: #""name": "Manx_Net""#)))
        XCTAssertEqual(badNetwork.code, 7)
        XCTAssertEqual(badNetwork.msg, "network name 'Manx_Net' cannot name the Profile of its containers", badNetwork.stdout)
        // Invalid network configurations.
        let noDatastore = try cni("ADD", container: "ctr-x", netns: netns, pod: "a",
                                  conf: #"{"cniVersion": "1.0.0", "name": "manx", "type": "manx-cni", "nodename": "n1"}"#)
        XCTAssertEqual(noDatastore.code, 7)
        XCTAssertEqual(noDatastore.msg, "the network configuration has no datastore")
        let noNode = try cni("ADD", container: "ctr-x", netns: netns, pod: "a",
                             conf: #"{"cniVersion": "1.0.0", "name": "manx", "datastore": "/tmp"}"#)
        XCTAssertEqual(noNode.msg, "the network configuration has no nodename")
        XCTAssertEqual(try cni("ADD", container: "ctr-x", netns: netns, pod: "a", conf: conf(#", "mtu": "1400""#)).msg,
                       #"mtu must be an integer, got a string "1400""#)
        XCTAssertEqual(try cni("ADD", container: "ctr-x", netns: netns, pod: "a", conf: conf(#", "mtu": 20"#)).msg,
                       "mtu 20 is out of range (68-65535)")
        // A container id that is not the spec's (it would also reach ip's batch input).
        let badID = try cni("ADD", container: "ctr\nlink del lo", netns: netns, pod: "a")
        XCTAssertEqual(badID.code, 4)
        XCTAssertEqual(badID.msg, "CNI_CONTAINERID: 'ctr\nlink del lo' must start with a letter or digit and hold only letters, digits, '_', '.' and '-'")
        // A netns path that would split ip's batch input.
        XCTAssertEqual(try cni("ADD", container: "ctr-x", netns: "/run/netns/a b", pod: "a").msg,
                       "CNI_NETNS: '/run/netns/a b' must not contain whitespace or quotes")
        // manx-cni makes the interface, so it cannot follow another plugin.
        let chained = try cni("ADD", container: "ctr-x", netns: netns, pod: "a", conf: conf(#", "prevResult": {"cniVersion": "1.0.0"}"#))
        XCTAssertEqual(chained.code, 7)
        XCTAssertEqual(chained.msg, "manx-cni creates the pod's interface and address, so it must be the first plugin of the list (ADD got a prevResult)")
        // Version.
        let old = try cni("ADD", container: "ctr-x", netns: netns, pod: "a",
                          conf: #"{"cniVersion": "0.2.0", "name": "manx", "datastore": "/tmp", "nodename": "n"}"#)
        XCTAssertEqual(old.code, 1)
        XCTAssertEqual(old.msg, "incompatible CNI version 0.2.0: manx-cni supports 0.3.0, 0.3.1, 0.4.0, 1.0.0")
        // Environment.
        let badIfname = try cni("ADD", container: "ctr-x", netns: netns, pod: "a", ifname: "this-name-is-too-long")
        XCTAssertEqual(badIfname.code, 4)
        XCTAssertEqual(badIfname.msg, "CNI_IFNAME: interface name 'this-name-is-too-long' must be 1-15 bytes")
        // Nothing was allocated or created by any of them.
        try assertNothingLeft(container: "ctr-x", pod: "a")
    }

    /// A command (ADD) with custom CNI_ARGS.
    func runWithArgs(_ args: String, netns: String, container: String = "ctr-x", command: String = "ADD") throws -> Call {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        p.arguments = ["--net=/run/netns/\(lab.node)", try binary("manx-cni")]
        var env = ProcessInfo.processInfo.environment
        env["CNI_COMMAND"] = command
        env["CNI_CONTAINERID"] = container
        env["CNI_NETNS"] = netns
        env["CNI_IFNAME"] = "eth0"
        env["CNI_ARGS"] = args
        p.environment = env
        let input = Pipe(), output = Pipe(), errors = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = errors
        try p.run()
        input.fileHandleForWriting.write(Data(conf().utf8))
        try input.fileHandleForWriting.close()
        return finish((p, output, errors))
    }

    func testFailuresLeaveNothingBehind() throws {
        // The tiny pool has two usable addresses (10.78.0.1 and .2).
        var held: [String] = []
        for pod in ["t1", "t2"] {
            let add = try cni("ADD", container: "ctr-\(pod)", netns: try podNetns(pod), pod: pod)
            XCTAssertEqual(add.status, 0, add.stdout)
            held.append(address(add.json))
        }
        XCTAssertEqual(held, ["10.78.0.1", "10.78.0.2"])
        let exhausted = try cni("ADD", container: "ctr-t3", netns: try podNetns("t3"), pod: "t3")
        XCTAssertEqual(exhausted.status, 1)
        XCTAssertEqual(exhausted.code, 100)
        XCTAssertEqual(exhausted.msg, "pool tiny (10.78.0.0/30) has no free address for node \(prefix)")
        XCTAssertEqual(exhausted.json["details"] as? String, "pod demo/t3")
        try assertNothingLeftFor(container: "ctr-t3", pod: "t3")

        // A pool that does not exist.
        let noPool = try cni("ADD", container: "ctr-np", netns: try podNetns("nopool"), pod: "nopool")
        XCTAssertEqual(noPool.code, 101)
        XCTAssertEqual(noPool.msg, "no IP pool is named 'nosuch'")
        try assertNothingLeftFor(container: "ctr-np", pod: "nopool")

        // No daemon on the node: the address, veth and endpoint were made,
        // then everything is undone.
        let lateNetns = try podNetns("late")
        let timeout = try cni("ADD", container: "ctr-late", netns: lateNetns, pod: "late",
                              conf: conf(#", "timeoutSeconds": 0.5"#, node: "\(prefix)-ghost"))
        XCTAssertEqual(timeout.code, 11)
        XCTAssertEqual(timeout.msg, "manxd on node \(prefix)-ghost did not program the policy of demo/late (\(PodInterface.hostName(namespace: "demo", pod: "late")), 10.77.0.1) within 0.5s")
        XCTAssertEqual(timeout.json["details"] as? String,
                       "no daemon state at /run/manx/\(prefix)-ghost/metadata.json (is manxd running with --node \(prefix)-ghost?)")
        try assertNothingLeftFor(container: "ctr-late", pod: "late")
        XCTAssertEqual(try sh("ip", "-n", "\(prefix)-late", "-o", "link", "show").split(separator: "\n").count, 1, "only lo in the pod")

        // manxd rejects the datastore (an unrelated invalid policy): the pod
        // is still read, but ADD fails with the daemon's reason.
        try datastore.write("broken.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: demo}\nspec: {podSelector: {}, ingress: [{ports: [{port: 99999}]}]}\n")
        let rejected = try cni("ADD", container: "ctr-late", netns: lateNetns, pod: "late")
        XCTAssertEqual(rejected.code, 112)
        XCTAssertEqual(rejected.msg, "manxd on node \(prefix) rejected the datastore, so the policy of demo/late cannot be applied")
        XCTAssertTrue((rejected.json["details"] as? String ?? "").contains("broken.yaml: NetworkPolicy demo/x: spec.ingress[0].ports[0].port: port 99999 is out of range"),
                      rejected.stdout)
        try assertNothingLeftFor(container: "ctr-late", pod: "late")
        try datastore.remove("broken.yaml")
        try waitApplied()

        // The freed addresses are handed out again.
        XCTAssertEqual(try cni("DEL", container: "ctr-t1", netns: "", pod: "t1").status, 0)
        let reuse = try cni("ADD", container: "ctr-t3", netns: try podNetns("t3b"), pod: "t3")
        XCTAssertEqual(reuse.status, 0, reuse.stdout)
        XCTAssertEqual(address(reuse.json), "10.78.0.1")
    }

    /// Only this pod's leftovers (other pods of the test are still up).
    func assertNothingLeftFor(container: String, pod: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let host = PodInterface.hostName(namespace: "demo", pod: pod)
        XCTAssertFalse(hostLinkExists(host), "veth \(host) is left behind", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dsDir)/wep-demo.\(pod).yaml"), "WorkloadEndpoint file left", file: file, line: line)
        XCTAssertEqual(try allocations(container), [], "allocation left", file: file, line: line)
    }

    func testFixedAddressAndPoolAnnotations() throws {
        let fixed = try cni("ADD", container: "ctr-fixed", netns: try podNetns("fixed"), pod: "fixed")
        XCTAssertEqual(fixed.status, 0, fixed.stdout)
        XCTAssertEqual(address(fixed.json), "10.77.0.200")
        XCTAssertTrue(try sh("ip", "-n", "\(prefix)-fixed", "addr", "show", "dev", "eth0").contains("10.77.0.200/32"))

        let taken = try cni("ADD", container: "ctr-fixed2", netns: try podNetns("fixed2"), pod: "fixed2")
        XCTAssertEqual(taken.code, 102)
        XCTAssertEqual(taken.msg, "10.77.0.200 is already allocated to handle ctr-fixed (demo/fixed) on node \(prefix)")
        try assertNothingLeftFor(container: "ctr-fixed2", pod: "fixed2")

        let outside = try cni("ADD", container: "ctr-out", netns: try podNetns("outside"), pod: "outside")
        XCTAssertEqual(outside.code, 101)
        XCTAssertEqual(outside.msg, "10.79.0.5 is not in any enabled IP pool")
        try assertNothingLeftFor(container: "ctr-out", pod: "outside")

        // A pod that is not in the datastore gets an address from any pool:
        // the node's block claimed for the fixed address first, from its
        // first address (only the pool's own network address is skipped).
        let unknown = try cni("ADD", container: "ctr-ghost", netns: try podNetns("ghost"), pod: "ghost")
        XCTAssertEqual(unknown.status, 0, unknown.stdout)
        XCTAssertEqual(address(unknown.json), "10.77.0.192")

        // The namespace's ipv4pools annotation applies to its pods, once
        // ManxModel's Namespace carries annotations.
        let s1 = try cni("ADD", container: "ctr-s1", netns: try podNetns("s1"), pod: "s1", namespace: "small")
        XCTAssertEqual(s1.status, 0, s1.stdout)
        let (set, _) = try datastore.load()
        let small = try XCTUnwrap(set.namespaces["small"])
        if Mirror(reflecting: small).children.contains(where: { $0.label == "annotations" }) {
            XCTAssertEqual(address(s1.json), "10.78.0.1", "namespace annotation selects the tiny pool")
        } else {
            print("NOTE: ManxModel.Namespace has no annotations yet; the namespace ipv4pools fallback is not in effect")
        }
    }

    func testConcurrentAddsGetDistinctAddresses() throws {
        let n = Self.concurrentPods
        var netns: [String] = []
        for i in 1...n { netns.append(try podNetns("c\(i)")) }
        let started = try (1...n).map { i in
            try start("ADD", container: "ctr-c\(i)", netns: netns[i - 1], pod: "c\(i)", conf: conf())
        }
        let calls = started.map(finish)
        for (i, call) in calls.enumerated() { XCTAssertEqual(call.status, 0, "c\(i + 1): \(call.stdout) \(call.stderr)") }
        let addresses = calls.map { address($0.json) }
        XCTAssertEqual(Set(addresses).count, n, "\(addresses)")
        XCTAssertTrue(addresses.allSatisfy { $0.hasPrefix("10.77.0.") }, "\(addresses)")
        for i in 1...n {
            let status = EndpointStatus.read(paths, workload: "demo/c\(i)")
            XCTAssertEqual(status?.interface, PodInterface.hostName(namespace: "demo", pod: "c\(i)"))
            XCTAssertEqual(status?.ip, addresses[i - 1])
        }
        try waitApplied()
        let meta = try NodeMetadata.read(paths)
        for i in 1...n {
            let host = PodInterface.hostName(namespace: "demo", pod: "c\(i)")
            XCTAssertTrue(meta.endpoints.contains { $0.workload == "demo/c\(i)" && $0.interface == host && $0.ip == addresses[i - 1] })
        }
        // Every pod reaches the node.
        for i in [1, n] {
            XCTAssertNoThrow(try sh("ip", "netns", "exec", "\(prefix)-c\(i)", "ping", "-c", "1", "-W", "2", "10.98.0.1"))
        }
        let deleted = try (1...n).map { i in
            try start("DEL", container: "ctr-c\(i)", netns: netns[i - 1], pod: "c\(i)", conf: conf())
        }.map(finish)
        for call in deleted { XCTAssertEqual(call.status, 0, call.stdout) }
        for i in 1...n { try assertNothingLeftFor(container: "ctr-c\(i)", pod: "c\(i)") }
        try assertNothingLeft(container: "ctr-c1", pod: "c1")
    }

    func testRuntimeChainsTuningPlugin() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/tuning") else {
            XCTFail("Debian's reference plugins are missing: apt-get install -y containernetworking-plugins")
            return
        }
        let runtime = CNIRuntime(pluginDirectories: [URL(fileURLWithPath: try binary("manx-cni")).deletingLastPathComponent().path, "/usr/lib/cni"],
                                 cacheDirectory: cacheDir, hostNetns: "/run/netns/\(lab.node)")
        let conflist = """
            {"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [
              {"type": "manx-cni", "datastore": "\(dsDir)", "nodename": "\(prefix)"},
              {"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "1"}}
            ]}
            """
        let netns = try podNetns("chain")
        let args = ["K8S_POD_NAMESPACE": "demo", "K8S_POD_NAME": "chain"]
        let resultText = try runtime.add(conflist: conflist, containerID: "ctr-chain", netns: netns, args: args)
        let result = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(resultText.utf8)) as? [String: Any])
        XCTAssertEqual(address(result), "10.77.0.1")
        XCTAssertEqual(runtime.cachedResult(containerID: "ctr-chain"), resultText)
        // tuning ran in the pod's namespace after manx-cni.
        XCTAssertEqual(try sh("ip", "netns", "exec", "\(prefix)-chain", "sysctl", "-n", "net.ipv4.conf.eth0.arp_ignore"), "1\n")
        XCTAssertTrue(try sh("ip", "-n", "\(prefix)-chain", "link", "show", "dev", "eth0").contains("mtu 1400"))
        XCTAssertNoThrow(try runtime.check(conflist: conflist, containerID: "ctr-chain", netns: netns, args: args))

        // CHECK fails in the plugin that sees the change.
        try sh("ip", "netns", "exec", "\(prefix)-chain", "sysctl", "-qw", "net.ipv4.conf.eth0.arp_ignore=0")
        do {
            try runtime.check(conflist: conflist, containerID: "ctr-chain", netns: netns, args: args)
            XCTFail("CHECK passed with arp_ignore changed")
        } catch {
            XCTAssertEqual(error.plugin, "tuning")
            XCTAssertNotNil(error.code)
        }

        try runtime.del(conflist: conflist, containerID: "ctr-chain", netns: netns, args: args)
        XCTAssertNil(runtime.cachedResult(containerID: "ctr-chain"))
        try assertNothingLeftFor(container: "ctr-chain", pod: "chain")
        try runtime.del(conflist: conflist, containerID: "ctr-chain", netns: netns, args: args)

        // A failing plugin later in the chain: its error is reported and the
        // earlier plugins are undone.
        let failing = conflist.replacingOccurrences(of: "net.ipv4.conf.eth0.arp_ignore", with: "net.ipv4.conf.eth0.no_such_knob")
        let netnsBad = try podNetns("chainbad")
        do {
            try runtime.add(conflist: failing, containerID: "ctr-chainbad", netns: netnsBad,
                            args: ["K8S_POD_NAMESPACE": "demo", "K8S_POD_NAME": "chainbad"])
            XCTFail("ADD passed with an invalid sysctl")
        } catch {
            XCTAssertEqual(error.plugin, "tuning")
            XCTAssertTrue(error.description.contains("no_such_knob"), error.description)
        }
        XCTAssertNil(runtime.cachedResult(containerID: "ctr-chainbad"))
        try assertNothingLeftFor(container: "ctr-chainbad", pod: "chainbad")

        // A plugin that is not installed.
        do {
            try runtime.add(conflist: #"{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "nonexistent"}]}"#,
                            containerID: "ctr-none", netns: netnsBad, args: [:])
            XCTFail("ADD passed with a missing plugin")
        } catch {
            XCTAssertEqual(error.plugin, "nonexistent")
            XCTAssertTrue(error.message.hasPrefix("plugin nonexistent not found in "), error.message)
        }
    }
}
