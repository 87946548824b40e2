import Foundation
import ManxDatastore
import ManxEtcd
import ManxIPAM
import ManxModel
import ManxNodeState

/// The datastore as the plugin uses it, a unit (directory file or etcd key)
/// at a time: the directory of the network configuration's `datastore`, or
/// etcd when `datastore_type` is `etcdv3` (Calico's setting).
protocol CNIStore: Sendable {
    var description: String { get }
    var ipam: any IPAMStore { get }
    /// Fails when the datastore cannot be used at all.
    func check() throws(CNIError)
    /// Units that may hold the pod and its namespace.
    func podUnits(namespace: String, pod: String) throws(CNIError) -> [(name: String, text: String)]
    /// Where the workload's WorkloadEndpoint lives.
    func endpointUnit(_ workload: CNIWorkload, node: String, ifname: String) -> String
    /// Creates the Profile of a CNI network unless the datastore has one.
    func ensureProfile(network: String, yaml: String) throws(CNIError)
    /// Every unit that may hold a WorkloadEndpoint (DEL without pod arguments).
    func endpointUnits() throws(CNIError) -> [String]
    /// A unit's text; nil: it does not exist. A datastore that cannot be
    /// read is an error, never "absent": DEL must not release an address
    /// an endpoint it could not see may still claim.
    func read(_ unit: String) throws(CNIError) -> String?
    /// Writes the endpoint; returns the datastore's revision of the write, if it has one.
    func write(_ unit: String, _ endpoint: WorkloadEndpoint) throws(CNIError) -> Int64?
    func remove(_ unit: String) throws(CNIError)
    /// Whether manxd's last word is a rejection of a datastore that holds
    /// the endpoint written at `revision` (then waiting is pointless).
    func rejected(_ meta: NodeMetadata, since revision: Int64?) -> Bool
}

struct DirectoryCNIStore: CNIStore {
    let datastore: DirectoryDatastore
    var description: String { datastore.directory }
    var ipam: any IPAMStore { IPAM(datastore: datastore) }

    func check() throws(CNIError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: datastore.directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CNIError(.invalidNetworkConfig, "datastore \(datastore.directory) is not a directory")
        }
    }

    func podUnits(namespace: String, pod: String) throws(CNIError) -> [(name: String, text: String)] {
        do {
            // Cheap filter first: a file that does not mention the name cannot hold the resource.
            return try datastore.files().filter { ResourceSet.mentions($0.text, [pod, namespace]) }
        } catch {
            throw CNIError(.datastore, "cannot read the datastore \(datastore.directory): \(error)")
        }
    }

    /// `wep-<namespace>.<pod>.yaml` (a namespace name has no dot, so no two
    /// pods share a file; a container ID is a `cni` workload's name).
    func endpointUnit(_ workload: CNIWorkload, node: String, ifname: String) -> String { "wep-\(workload.namespace).\(workload.name).yaml" }

    /// `profile-<network>.yaml`, unless a file defines the Profile already.
    /// Two ADDs that race write the same file with the same content.
    func ensureProfile(network: String, yaml: String) throws(CNIError) {
        _ = try CNIWorkload.validated(profile: yaml, network: network)
        do {
            let candidates = try datastore.files().filter { ResourceSet.mentions($0.text, [network]) }
            let found = try? ResourceSet.decode(files: candidates, kinds: ["Profile"])
            if found?.profiles[network] != nil || candidates.contains(where: { $0.name == Self.profileUnit(network) }) { return }
            try datastore.write(Self.profileUnit(network), yaml)
        } catch {
            throw CNIError(.datastore, "cannot create Profile \(network) in \(datastore.directory): \(error)")
        }
    }

    static func profileUnit(_ network: String) -> String { "profile-\(network).yaml" }

    func endpointUnits() throws(CNIError) -> [String] {
        do {
            return try datastore.fileNames().filter { $0.hasPrefix("wep-") }
        } catch {
            throw CNIError(.datastore, "cannot list \(datastore.directory): \(error.localizedDescription)")
        }
    }

    func read(_ unit: String) throws(CNIError) -> String? {
        do {
            return try datastore.readIfPresent(unit)
        } catch {
            throw CNIError(.datastore, "cannot read \(unit) in \(datastore.directory): \(error)")
        }
    }

    func write(_ unit: String, _ endpoint: WorkloadEndpoint) throws(CNIError) -> Int64? {
        do {
            try datastore.write(unit, endpoint.yaml)
        } catch {
            throw CNIError(.datastore, "cannot write \(unit) in \(datastore.directory): \(error.localizedDescription)")
        }
        return nil
    }

    func remove(_ unit: String) throws(CNIError) {
        do {
            try datastore.remove(unit)
        } catch {
            throw CNIError(.datastore, "cannot remove \(unit) from \(datastore.directory): \(error.localizedDescription)")
        }
    }

    /// The rejected content is still what the directory holds.
    func rejected(_ meta: NodeMetadata, since revision: Int64?) -> Bool {
        guard let rejected = meta.rejectedDigest, let current = try? datastore.snapshot().digest else { return false }
        return rejected == current
    }
}

struct EtcdCNIStore: CNIStore {
    let client: EtcdClient
    /// The node's state directory, which holds the node-local IPAM lock.
    let stateDirectory: String
    var description: String { "etcd \(client.endpoints.joined(separator: ","))" }
    var ipam: any IPAMStore { EtcdIPAM(client: client, lockPath: stateDirectory + "/ipam.lock") }

    func check() throws(CNIError) {
        do {
            try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
        } catch {
            throw CNIError(.datastore, "cannot create \(stateDirectory) for the IPAM lock: \(error.localizedDescription)")
        }
    }

    private func blocking<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) throws(CNIError) -> T {
        do {
            return try runBlocking(body)
        } catch {
            throw CNIError(.datastore, "\(what) in \(description): \(error)")
        }
    }

    func podUnits(namespace: String, pod: String) throws(CNIError) -> [(name: String, text: String)] {
        let keys = [ResourceKeys.prefix + "core/pods/\(namespace)/\(pod)", ResourceKeys.prefix + "core/namespaces/\(namespace)"]
        let client = client
        return try blocking("cannot read pod \(namespace)/\(pod)") {
            // Both reads at once: each is a round trip.
            async let pod = client.get(keys[0])
            async let namespace = client.get(keys[1])
            return try await [pod, namespace].compactMap { $0.map { ($0.key, $0.value) } }
        }
    }

    func endpointUnit(_ workload: CNIWorkload, node: String, ifname: String) -> String {
        let name = WorkloadEndpoint.resourceName(node: node, orchestrator: workload.orchestrator, pod: workload.name, endpoint: ifname)
        return ResourceKeys.prefix + "projectcalico.org/workloadendpoints/\(workload.namespace)/\(name)"
    }

    /// Put only if the key is absent (its mod revision 0): an operator's
    /// own profile of that name stays.
    func ensureProfile(network: String, yaml: String) throws(CNIError) {
        let documents = try CNIWorkload.validated(profile: yaml, network: network)
        guard let document = documents.first, let key = ResourceKeys.key(document.header) else { return }
        let client = client
        _ = try blocking("cannot create Profile \(network)") {
            try await client.transaction(if: [EtcdClient.Compare(key: key, modRevision: 0)], then: [.put(key, document.json)])
        }
    }

    func endpointUnits() throws(CNIError) -> [String] {
        let client = client
        return try blocking("cannot list endpoints") {
            try await client.list(prefix: ResourceKeys.prefix + "projectcalico.org/workloadendpoints/").kvs.map(\.key)
        }
    }

    func read(_ unit: String) throws(CNIError) -> String? {
        let client = client
        return try blocking("cannot read \(unit)") { try await client.get(unit)?.value }
    }

    func write(_ unit: String, _ endpoint: WorkloadEndpoint) throws(CNIError) -> Int64? {
        let json: String
        do {
            guard let document = try ResourceSet.documents(file: unit, text: endpoint.yaml).first else { throw CNIError(.datastore, "no document") }
            json = document.json
        } catch {
            throw CNIError(.datastore, "WorkloadEndpoint \(endpoint.namespace)/\(endpoint.name) does not encode: \(error)")
        }
        let client = client
        return try blocking("cannot write \(unit)") { try await client.put(unit, json) }
    }

    func remove(_ unit: String) throws(CNIError) {
        let client = client
        _ = try blocking("cannot delete \(unit)") { try await client.delete(unit) }
    }

    /// manxd rejected a revision that holds the endpoint, and has applied nothing since.
    func rejected(_ meta: NodeMetadata, since revision: Int64?) -> Bool {
        guard let revision, meta.rejectedDigest != nil, let rejectedAt = meta.rejectedRevision else { return false }
        return rejectedAt >= revision && rejectedAt > (meta.appliedRevision ?? 0)
    }
}

/// The plugin's WorkloadEndpoints, in either store.
struct EndpointStore {
    let store: any CNIStore

    /// The endpoint in a unit, if the unit exists and holds one.
    func read(_ unit: String) throws(CNIError) -> (endpoint: WorkloadEndpoint?, text: String)? {
        guard let text = try store.read(unit) else { return nil }
        let set = try? ResourceSet.decode(files: [(unit, text)], kinds: ["WorkloadEndpoint"])
        return (set?.workloadEndpoints.values.first, text)
    }

    /// Whether the unit belongs to the container. One that no longer
    /// decodes counts as the container's if it names it.
    func belongs(_ unit: String, to containerID: String) throws(CNIError) -> Bool {
        guard let (endpoint, text) = try read(unit) else { return false }
        if let endpoint { return endpoint.containerID == containerID }
        return text.contains(containerID)
    }

    /// Every endpoint unit of the container (DEL without pod arguments).
    func units(of containerID: String) throws(CNIError) -> [String] {
        var mine: [String] = []
        for unit in try store.endpointUnits() where try belongs(unit, to: containerID) { mine.append(unit) }
        return mine
    }
}
