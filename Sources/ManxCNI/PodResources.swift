import Foundation
import ManxDatastore
import ManxIPAM
import ManxModel

/// What the datastore says about the pod being added: its IPAM annotations.
struct PodRequest: Sendable, Equatable {
    /// cni.projectcalico.org/ipv4pools, from the pod, else its namespace.
    var pools: [String] = []
    /// cni.projectcalico.org/ipAddrs, from the pod.
    var address: IPv4Address?

    /// Reads the Pod and its Namespace. Only their documents are decoded,
    /// so an invalid policy elsewhere in the datastore does not stop pods
    /// from starting (manxd reports that one). A pod that is not in the
    /// datastore gets no annotations.
    static func read(_ snapshot: DirectoryDatastore.Snapshot, namespace: String, pod: String) throws(CNIError) -> PodRequest {
        var podResource: Pod?
        var namespaceResource: Namespace?
        let podRef = "Pod \(namespace)/\(pod)", namespaceRef = "Namespace \(namespace)"
        // Cheap filter first: a file that does not mention the name cannot hold the resource.
        for file in snapshot.files where file.text.contains(pod) || file.text.contains(namespace) {
            do {
                let set = try ResourceSet.decode(files: [file], kinds: ["Pod", "Namespace"])
                if let p = set.pods["\(namespace)/\(pod)"] { podResource = p }
                if let n = set.namespaces[namespace] { namespaceResource = n }
            } catch {
                let mine = error.errors.filter { $0.resource == podRef || $0.resource == namespaceRef }
                if !mine.isEmpty {
                    throw CNIError(.invalidPodAnnotation, "the datastore's \(mine[0].resource) is invalid",
                                   details: mine.map(\.description).joined(separator: "; "))
                }
            }
        }
        var request = PodRequest()
        let podAnnotations = podResource?.annotations ?? [:]
        let namespaceAnnotations = namespaceResource?.annotations ?? [:]
        do {
            if let text = podAnnotations[IPAM.poolsAnnotation] {
                request.pools = try IPAM.parsePoolsAnnotation(text)
            } else if let text = namespaceAnnotations[IPAM.poolsAnnotation] {
                request.pools = try IPAM.parsePoolsAnnotation(text)
            }
            if let text = podAnnotations[IPAM.addressesAnnotation] {
                request.address = try IPAM.parseAddressesAnnotation(text).first
            }
        } catch {
            throw CNIError(.invalidPodAnnotation, "pod \(namespace)/\(pod): \(error.message)")
        }
        return request
    }
}

/// The WorkloadEndpoint files the plugin writes: `wep-<namespace>.<pod>.yaml`
/// (a namespace name has no dot, so no two pods share a file).
struct EndpointFiles {
    let datastore: DirectoryDatastore

    static func fileName(namespace: String, pod: String) -> String { "wep-\(namespace).\(pod).yaml" }

    func write(_ wep: WorkloadEndpoint) throws(CNIError) {
        do {
            try datastore.write(wep.ref.file, wep.yaml)
        } catch {
            throw CNIError(.datastore, "cannot write \(wep.ref.file) in \(datastore.directory): \(error.localizedDescription)")
        }
    }

    func remove(_ file: String) throws(CNIError) {
        do {
            try datastore.remove(file)
        } catch {
            throw CNIError(.datastore, "cannot remove \(file) from \(datastore.directory): \(error.localizedDescription)")
        }
    }

    /// The endpoint in a file, if the file exists and holds one.
    func read(_ file: String) -> (endpoint: WorkloadEndpoint?, text: String)? {
        let path = URL(fileURLWithPath: datastore.directory).appendingPathComponent(file).path
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        let set = try? ResourceSet.decode(files: [(file, text)], kinds: ["WorkloadEndpoint"])
        return (set?.workloadEndpoints.values.first, text)
    }

    /// Whether the file belongs to the container. A file that no longer
    /// decodes counts as the container's if it names it.
    func belongs(_ file: String, to containerID: String) -> Bool {
        guard let (endpoint, text) = read(file) else { return false }
        if let endpoint { return endpoint.containerID == containerID }
        return text.contains("containerID: \(YAMLText.quote(containerID))")
    }

    /// Every endpoint file of the container (DEL without pod arguments).
    func files(of containerID: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: datastore.directory)) ?? []
        return names.filter { $0.hasPrefix("wep-") && $0.hasSuffix(".yaml") }.sorted().filter { belongs($0, to: containerID) }
    }
}
