import Foundation

/// Renders the conformance model as datastore resources.
enum ModelYAML {
    /// With `interfaces` the pods are local to one node, with their address
    /// and interface; without (a cluster), they ask manx-cni for their
    /// model address through the ipAddrs annotation, and the CNI plugin's
    /// WorkloadEndpoints give the rest.
    static func render(_ model: ConformanceModel, interfaces: [String: String]?,
                       overrides: Expectation.ModelOverrides?) -> String {
        var docs: [String] = []
        for name in model.namespaces.keys.sorted() {
            let labels = overrides?.namespace_labels?[name] ?? model.namespaces[name]!.labels
            docs.append("""
            apiVersion: v1
            kind: Namespace
            metadata:
              name: \(quote(name))
              labels: \(flow(labels))
            """)
        }
        for key in model.pods.keys.sorted() {
            let pod = model.pods[key]!
            let labels = overrides?.pod_labels?[key] ?? pod.labels
            let ports = pod.containerPorts.map {
                "{name: \(quote($0.name)), containerPort: \($0.containerPort), protocol: \($0.protocol)}"
            }.joined(separator: ", ")
            let placement = interfaces.map { """
                  annotations: {manx.io/interface: \(quote($0[key] ?? ""))}
                spec:
                  containers: [{name: serve, ports: [\(ports)]}]
                status:
                  podIP: \(pod.ip)
                """ } ?? """
                  annotations: {cni.projectcalico.org/ipAddrs: '["\(pod.ip)"]'}
                spec:
                  containers: [{name: serve, ports: [\(ports)]}]
                """
            docs.append("""
            apiVersion: v1
            kind: Pod
            metadata:
              name: \(quote(pod.name))
              namespace: \(quote(pod.namespace))
              labels: \(flow(labels))
            """ + "\n" + placement)
        }
        return docs.joined(separator: "\n---\n") + "\n"
    }

    static func quote(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\\\"") + "\"" }

    static func flow(_ labels: [String: String]) -> String {
        "{" + labels.sorted { $0.key < $1.key }.map { "\(quote($0.key)): \(quote($0.value))" }.joined(separator: ", ") + "}"
    }
}
