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
    static func read(_ units: [(name: String, text: String)], namespace: String, pod: String) throws(CNIError) -> PodRequest {
        var podResource: Pod?
        var namespaceResource: Namespace?
        let podRef = "Pod \(namespace)/\(pod)", namespaceRef = "Namespace \(namespace)"
        for file in units {
            do {
                // Only documents naming the pod or the namespace are parsed
                // (a file may hold many other pods).
                let set = try ResourceSet.decode(files: [file], kinds: ["Pod", "Namespace"],
                                                 mentioning: [["Pod", pod], ["Namespace", namespace]])
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
