import Foundation

/// Renders the conformance model as datastore resources.
enum ModelYAML {
    static func render(_ model: ConformanceModel, interfaces: [String: String],
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
            docs.append("""
            apiVersion: v1
            kind: Pod
            metadata:
              name: \(quote(pod.name))
              namespace: \(quote(pod.namespace))
              labels: \(flow(labels))
              annotations: {manx.io/interface: \(quote(interfaces[key] ?? ""))}
            spec:
              containers: [{name: serve, ports: [\(ports)]}]
            status:
              podIP: \(pod.ip)
            """)
        }
        return docs.joined(separator: "\n---\n") + "\n"
    }

    static func quote(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\\\"") + "\"" }

    static func flow(_ labels: [String: String]) -> String {
        "{" + labels.sorted { $0.key < $1.key }.map { "\(quote($0.key)): \(quote($0.value))" }.joined(separator: ", ") + "}"
    }
}
