import Foundation
import ManxDatastore
import ManxIPAM
import ManxModel
import ManxNodeState

/// The manx-cni plugin (CNI specification 1.0.0, also speaking 0.3.0 to
/// 0.4.0): ADD, DEL, CHECK and VERSION. It runs in the node's network
/// namespace.
///
/// ADD: address from IPAM (handle = container id, honouring the pod's
/// Calico annotations), a veth with the pod side in the container's
/// namespace, the WorkloadEndpoint in the datastore, then a wait until
/// manxd on the node has programmed the pod's policy. Any failure after the
/// address was assigned undoes everything before the error is reported.
public struct CNIPlugin: Sendable {
    public let environment: CNIEnvironment
    public let conf: NetConf

    public init(environment: CNIEnvironment, conf: NetConf) {
        self.environment = environment
        self.conf = conf
    }

    /// What the plugin prints on stdout and its exit status.
    public struct Outcome: Sendable, Equatable {
        public var stdout: String
        public var status: Int32
    }

    /// The whole plugin: environment and stdin in, stdout and exit status
    /// out. Errors become the specification's error JSON with exit status 1.
    public static func main(environment env: [String: String], stdin: String) -> Outcome {
        var stages = StageTimes()
        stages.mark("started")
        let outcome = main(environment: env, stdin: stdin, stages: &stages)
        if env["MANX_CNI_TIMINGS"] != nil {
            stages.mark("done")
            FileHandle.standardError.write(Data((stages.json(command: env["CNI_COMMAND"] ?? "", status: outcome.status) + "\n").utf8))
        }
        return outcome
    }

    static func main(environment env: [String: String], stdin: String, stages: inout StageTimes) -> Outcome {
        var version = CNIVersion.current
        do throws(CNIError) {
            let environment = try CNIEnvironment.parse(env)
            if environment.command == .version {
                return Outcome(stdout: #"{"cniVersion":"\#(CNIVersion.current)","supportedVersions":["# + CNIVersion.supported.map { "\"\($0)\"" }.joined(separator: ",") + "]}", status: 0)
            }
            let conf = try NetConf.parse(stdin)
            version = conf.cniVersion
            let plugin = CNIPlugin(environment: environment, conf: conf)
            stages.mark("parsed")
            switch environment.command {
            case .add: return Outcome(stdout: try plugin.add(&stages).json, status: 0)
            case .del: try plugin.del(); return Outcome(stdout: "", status: 0)
            case .check: try plugin.check(); return Outcome(stdout: "", status: 0)
            case .version: return Outcome(stdout: "", status: 0)
            }
        } catch {
            return Outcome(stdout: error.json(cniVersion: version), status: 1)
        }
    }

    var store: any CNIStore {
        switch conf.datastore {
        case .directory(let directory): return DirectoryCNIStore(datastore: DirectoryDatastore(directory: directory))
        case .etcd(let client): return EtcdCNIStore(client: client, stateDirectory: paths.stateDirectory)
        }
    }
    var ipam: any IPAMStore { store.ipam }
    var endpoints: EndpointStore { EndpointStore(store: store) }
    var paths: NodePaths { NodePaths(node: conf.nodename) }

    func checkDatastore() throws(CNIError) { try store.check() }

    func endpointUnit(_ workload: CNIWorkload) -> String {
        store.endpointUnit(workload, node: conf.nodename, ifname: environment.ifname)
    }

    func checkNetns() throws(CNIError) {
        guard FileManager.default.fileExists(atPath: environment.netns) else {
            throw CNIError(.containerUnknown, "netns \(environment.netns) does not exist")
        }
    }

    func workload() throws(CNIError) -> CNIWorkload { try CNIWorkload.of(environment, network: conf.name) }

    static func argsText(_ args: [String: String]) -> String {
        args.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ";")
    }

    // MARK: ADD

    public func add() throws(CNIError) -> CNIResult {
        var stages = StageTimes()
        return try add(&stages)
    }

    func add(_ stages: inout StageTimes) throws(CNIError) -> CNIResult {
        if conf.prevResult != nil {
            throw CNIError(.invalidNetworkConfig, "manx-cni creates the pod's interface and address, so it must be the first plugin of the list (ADD got a prevResult)")
        }
        try checkDatastore()
        let identity = try workload()
        try checkNetns()
        stages.mark("checked")
        let request: PodRequest
        if identity.orchestrator == .k8s {
            request = try PodRequest.read(try store.podUnits(namespace: identity.namespace, pod: identity.name),
                                          namespace: identity.namespace, pod: identity.name)
        } else {
            // No Pod to read; the network's profile must exist before the
            // endpoint that names it (else the whole datastore is invalid).
            request = PodRequest()
            try store.ensureProfile(network: conf.name, yaml: CNIWorkload.profileYAML(network: conf.name))
        }
        let workload = identity.key
        stages.mark("pod read")
        let assignment: IPAMAssignment
        do {
            assignment = try ipam.assign(IPAMRequest(handle: environment.containerID, node: conf.nodename, workload: workload,
                                                     pools: request.pools, address: request.address))
        } catch {
            throw Self.cniError(error, workload: workload)
        }
        stages.mark("address assigned")
        let host = PodInterface.hostName(namespace: identity.namespace, pod: identity.name)
        let wepUnit = endpointUnit(identity)
        do throws(CNIError) {
            // A retried ADD finds the interface of the earlier attempt.
            try Links.delete(host)
            let mtu = conf.mtu ?? (try? NodeMetadata.read(paths))?.podMTU ?? 1500
            let links = try Links.create(host: host, ifname: environment.ifname, netns: environment.netns,
                                         address: assignment.address, mtu: mtu, containerID: environment.containerID)
            stages.mark("interfaces made")
            let name = WorkloadEndpoint.resourceName(node: conf.nodename, orchestrator: identity.orchestrator, pod: identity.name,
                                                     endpoint: environment.ifname)
            var wep = WorkloadEndpoint(namespace: identity.namespace, name: name, pod: identity.name, node: conf.nodename,
                                       endpoint: environment.ifname, containerID: environment.containerID, interfaceName: host,
                                       address: assignment.address, mac: links.pod.mac,
                                       ref: ResourceRef(kind: "WorkloadEndpoint", namespace: identity.namespace, name: name, file: wepUnit))
            (wep.orchestrator, wep.labels, wep.profiles) = (identity.orchestrator, identity.labels, identity.profiles)
            let revision = try store.write(wepUnit, wep)
            stages.mark("endpoint written")
            try waitProgrammed(workload: workload, interface: links.host, address: assignment.address, revision: revision)
            stages.mark("policy programmed")
            try Links.activate(host: links.host, address: assignment.address)
            stages.mark("activated")
            return CNIResult(cniVersion: conf.cniVersion, host: links.host, pod: links.pod, sandbox: environment.netns,
                             address: assignment.address)
        } catch {
            // Nothing half-applied: the endpoint first (manxd stops using the
            // interface), then the interface, then the address, which another
            // pod may get only once no endpoint claims it.
            // An endpoint that may still be there keeps its address: the
            // runtime's DEL after the failed ADD frees both.
            let owned = (try? endpoints.belongs(wepUnit, to: environment.containerID)) ?? true
            let gone = !owned || (try? store.remove(wepUnit)) != nil
            try? Links.delete(host)
            if gone { _ = try? ipam.release(handle: environment.containerID) }
            throw error
        }
    }

    static func cniError(_ error: IPAMError, workload: String) -> CNIError {
        switch error.code {
        case .exhausted: return CNIError(.ipamExhausted, error.message, details: "pod \(workload)")
        case .noPool: return CNIError(.ipamNoPool, error.message, details: "pod \(workload)")
        case .addressInUse: return CNIError(.ipamAddressInUse, error.message, details: "pod \(workload)")
        case .invalidRequest: return CNIError(.invalidPodAnnotation, error.message, details: "pod \(workload)")
        case .datastore: return CNIError(.datastore, error.message)
        }
    }

    /// Waits until the daemon publishes the endpoint's status: its policy
    /// in force on this very interface (its index, not only its name: an
    /// earlier state lists the pod's previous veth under the same name).
    /// The metadata says why not (the batch rejected, the interface not
    /// found); it holds every rule, so it is read only when replaced.
    func waitProgrammed(workload: String, interface link: LinkInfo, address: IPv4Address, revision: Int64?) throws(CNIError) {
        let interface = link.name
        let deadline = Date().addingTimeInterval(conf.timeoutSeconds)
        var last = "no daemon state at \(paths.metadataFile) (is manxd running with --node \(conf.nodename)?)"
        // Polled, every millisecond at first: the status usually comes
        // within a few. Not inotify: closing an inotify instance waits for
        // an SRCU grace period (fsnotify's mark reaper), 10-25 ms here,
        // which the plugin paid on every ADD.
        let started = Date()
        var metadataVersion: (Date?, UInt64?) = (nil, nil)
        while true {
            if let status = EndpointStatus.read(paths, workload: workload),
               status.interface == interface, status.ifindex == link.ifindex, status.ip == address.description {
                return
            }
            let attributes = try? FileManager.default.attributesOfItem(atPath: paths.metadataFile)
            let version = (attributes?[.modificationDate] as? Date, (attributes?[.size] as? NSNumber)?.uint64Value)
            if version != metadataVersion, let meta = try? NodeMetadata.read(paths) {
                metadataVersion = version
                if store.rejected(meta, since: revision) {
                    throw CNIError(.policyRejected, "manxd on node \(conf.nodename) rejected the datastore, so the policy of \(workload) cannot be applied",
                                   details: meta.error ?? "no reason given")
                }
                if let listed = meta.endpoints.first(where: { $0.workload == workload }) {
                    last = "manxd lists \(workload) with interface \(listed.interface) and address \(listed.ip)"
                } else if meta.missingInterfaces.contains(where: { $0.hasSuffix("(\(interface))") }) {
                    last = "manxd has not found interface \(interface)"
                } else {
                    last = "manxd (generation \(meta.generation)) does not list \(workload) yet"
                }
            }
            if Date() >= deadline {
                throw CNIError(.tryAgainLater,
                               "manxd on node \(conf.nodename) did not program the policy of \(workload) (\(interface), \(address)) within \(Self.seconds(conf.timeoutSeconds))",
                               details: last)
            }
            let waited = Date().timeIntervalSince(started)
            usleep(waited < 0.1 ? 1_000 : waited < 1 ? 5_000 : 20_000)
        }
    }

    static func seconds(_ t: Double) -> String { t == t.rounded() ? "\(Int(t))s" : "\(t)s" }

    // MARK: DEL

    /// Idempotent: whatever is already gone is skipped. The endpoint file
    /// and the host interface are removed only if they belong to this
    /// container (a newer sandbox of the same pod keeps its own).
    public func del() throws(CNIError) {
        try checkDatastore()
        var files: [String] = []
        var hosts: [String] = []
        // The endpoint its identity names; a container whose ADD had other
        // arguments is found by its ID.
        let identity = try workload()
        let unit = endpointUnit(identity)
        if try endpoints.belongs(unit, to: environment.containerID) {
            files = [unit]
        } else if identity.orchestrator == .cni {
            files = try endpoints.units(of: environment.containerID)
        }
        hosts = [PodInterface.hostName(namespace: identity.namespace, pod: identity.name)]
        for file in files {
            if let wep = try endpoints.read(file)?.endpoint { hosts.append(wep.interfaceName) }
        }
        for case .object(let i) in conf.prevResult?["interfaces"]?.arrayValue ?? [] where i["sandbox"] == nil {
            if let name = i["name"]?.stringValue { hosts.append(name) }
        }
        for file in files { try store.remove(file) }
        for host in Set(hosts).sorted() {
            guard let link = try Links.show(host), link.alias == environment.containerID else { continue }
            try Links.delete(host)
        }
        do {
            try ipam.release(handle: environment.containerID)
        } catch {
            throw CNIError(.datastore, "releasing the address of container \(environment.containerID): \(error.message)")
        }
    }

    // MARK: CHECK

    /// The address the result gives the sandbox interface `ifname` (the
    /// `ips` entry whose `interface` index points at it), else the first.
    static func sandboxAddress(_ result: JSONValue, ifname: String) -> String? {
        let interfaces = result["interfaces"]?.arrayValue ?? []
        let ips = result["ips"]?.arrayValue ?? []
        let index = interfaces.firstIndex { $0["name"]?.stringValue == ifname && $0["sandbox"] != nil }
        let mine = ips.first { ip in
            if case .int(let i)? = ip["interface"], let index { return Int(i) == index }
            return false
        }
        return (mine ?? ips.first)?["address"]?.stringValue
    }

    /// Verifies the container's networking is still what ADD made it.
    public func check() throws(CNIError) {
        guard CNIVersion.atLeast(conf.cniVersion, "0.4.0") else {
            throw CNIError(.incompatibleVersion, "CHECK needs cniVersion 0.4.0 or later, got \(conf.cniVersion)")
        }
        try checkDatastore()
        try checkNetns()
        var problems: [String] = []
        let held: [IPAMAssignment]
        do {
            held = try ipam.assignments(handle: environment.containerID)
        } catch {
            throw CNIError(.datastore, error.message)
        }
        // The address: from prevResult, else what IPAM holds.
        var address: IPv4Address? = held.first?.address
        if let prev = conf.prevResult {
            let text = Self.sandboxAddress(prev, ifname: environment.ifname)
            guard let text, let parsed = IPv4Address(String(text.split(separator: "/")[0])) else {
                throw CNIError(.checkMismatch, "prevResult has no IPv4 address", details: prev.text)
            }
            address = parsed
            if !held.contains(where: { $0.address == parsed }) {
                problems.append("IPAM holds \(held.isEmpty ? "no address" : held.map(\.address.description).joined(separator: ", ")) for container \(environment.containerID), not \(parsed)")
            }
        } else if held.isEmpty {
            problems.append("IPAM holds no address for container \(environment.containerID)")
        }

        // The endpoint in the datastore.
        let identity = try workload()
        let file = endpointUnit(identity)
        let host = PodInterface.hostName(namespace: identity.namespace, pod: identity.name)
        let workload = identity.key
        if let wep = try endpoints.read(file)?.endpoint {
            if wep.containerID != environment.containerID {
                problems.append("WorkloadEndpoint \(file) belongs to container \(wep.containerID), not \(environment.containerID)")
            }
            if let address, wep.address != address { problems.append("WorkloadEndpoint \(file) has address \(wep.address), not \(address)") }
            if wep.interfaceName != host { problems.append("WorkloadEndpoint \(file) names interface \(wep.interfaceName), not \(host)") }
            if wep.endpoint != environment.ifname { problems.append("WorkloadEndpoint \(file) names endpoint \(wep.endpoint), not \(environment.ifname)") }
        } else {
            problems.append("no WorkloadEndpoint for container \(environment.containerID) in \(store.description) (\(file))")
        }

        // The pod side.
        if let pod = try Links.show(environment.ifname, netns: environment.netns, addresses: true) {
            if let address, !pod.ipv4.contains("\(address)/32") {
                problems.append("\(environment.ifname) in \(environment.netns) has \(pod.ipv4.isEmpty ? "no IPv4 address" : pod.ipv4.joined(separator: ", ")), not \(address)/32")
            }
            if !pod.up { problems.append("\(environment.ifname) in \(environment.netns) is down") }
            let routes = try Links.routes(netns: environment.netns)
            if !routes.contains(where: { $0.prefix == 0 && $0.gateway == PodInterface.gateway && $0.interface == pod.ifindex }) {
                problems.append("\(environment.netns) has no default route via \(PodInterface.gateway) dev \(environment.ifname)")
            }
        } else {
            problems.append("\(environment.netns) has no interface \(environment.ifname)")
        }

        // The host side.
        if let link = try Links.show(host) {
            if link.alias != environment.containerID {
                problems.append("host interface \(host) belongs to container \(link.alias ?? "(none)"), not \(environment.containerID)")
            }
            if !link.up { problems.append("host interface \(host) is down") }
        } else {
            problems.append("host interface \(host) does not exist")
        }

        // The policy: in force on this interface, as ADD waited for it (the
        // endpoint's status comes first; the node's metadata follows its pass).
        if let address, problems.isEmpty {
            let status = EndpointStatus.read(paths, workload: workload)
            let enforced = status.map { $0.interface == host && $0.ip == address.description } ?? false
            if !enforced, !((try? NodeMetadata.read(paths))?.endpoints.contains {
                $0.workload == workload && $0.interface == host && $0.ip == address.description } ?? false) {
                problems.append("manxd on node \(conf.nodename) does not list \(workload) on \(host) with \(address)")
            }
        }
        if !problems.isEmpty {
            throw CNIError(.checkMismatch, "container \(environment.containerID) differs from its result: " + problems.joined(separator: "; "))
        }
    }
}
