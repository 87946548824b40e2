// The YAML documents IPAM and the CNI plugin write to the datastore. Each
// decodes back to an equal value (see NetworkingModelTests).

extension IPAMBlock {
    /// The manx.io/v1 IPAMBlock document, allocations in address order.
    public var yaml: String {
        var lines = [
            "apiVersion: manx.io/v1",
            "kind: IPAMBlock",
            "metadata:",
            "  name: \(YAMLText.quote(IPAMBlock.resourceName(cidr)))",
            "spec:",
            "  cidr: \(YAMLText.quote(cidr.description))",
            "  pool: \(YAMLText.quote(pool))",
            "  node: \(YAMLText.quote(node))",
        ]
        if allocations.isEmpty {
            lines.append("  allocations: []")
        } else {
            lines.append("  allocations:")
            for a in allocations.sorted(by: { $0.address < $1.address }) {
                lines.append("    - {address: \(YAMLText.quote(a.address.description)), handle: \(YAMLText.quote(a.handle)), "
                             + "workload: \(YAMLText.quote(a.workload)), node: \(YAMLText.quote(a.node))}")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

extension WorkloadEndpoint {
    /// The projectcalico.org/v3 WorkloadEndpoint document.
    public var yaml: String {
        var lines = [
            "apiVersion: projectcalico.org/v3",
            "kind: WorkloadEndpoint",
            "metadata:",
            "  name: \(YAMLText.quote(name))",
            "  namespace: \(YAMLText.quote(namespace))",
        ]
        if !labels.isEmpty {
            lines.append("  labels:")
            lines += labels.sorted { $0.key < $1.key }.map { "    \(YAMLText.quote($0.key)): \(YAMLText.quote($0.value))" }
        }
        lines += [
            "spec:",
            "  node: \(YAMLText.quote(node))",
            "  orchestrator: \(orchestrator.rawValue)",
            "  \(orchestrator == .k8s ? "pod" : "workload"): \(YAMLText.quote(pod))",
            "  endpoint: \(YAMLText.quote(endpoint))",
            "  containerID: \(YAMLText.quote(containerID))",
            "  interfaceName: \(YAMLText.quote(interfaceName))",
            "  ipNetworks: [\(YAMLText.quote("\(address)/32"))]",
        ]
        if let mac { lines.append("  mac: \(YAMLText.quote(mac))") }
        if !profiles.isEmpty { lines.append("  profiles: [\(profiles.map(YAMLText.quote).joined(separator: ", "))]") }
        return lines.joined(separator: "\n") + "\n"
    }
}

public enum YAMLText {
    /// A YAML double-quoted scalar: always a string, whatever it looks like
    /// ("0123", "true", "null", ": ").
    public static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\x" + String(repeating: "0", count: 2 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
