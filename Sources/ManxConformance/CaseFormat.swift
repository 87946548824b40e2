import Foundation

/// `model.json`: the namespaces and pods every case runs against.
public struct ConformanceModel: Codable, Sendable {
    public struct NamespaceSpec: Codable, Sendable { public var labels: [String: String] }
    public struct ContainerPort: Codable, Sendable {
        public var name: String
        public var containerPort: Int
        public var `protocol`: String
    }
    public struct PodSpec: Codable, Sendable {
        public var namespace: String
        public var name: String
        public var labels: [String: String]
        public var ip: String
        public var containerPorts: [ContainerPort]
    }

    public var namespaces: [String: NamespaceSpec]
    public var pods: [String: PodSpec]

    /// The model from `dir/model.json`, else the built-in copy.
    public static func load(from dir: String) throws -> ConformanceModel {
        let path = dir + "/model.json"
        if FileManager.default.fileExists(atPath: path) {
            return try JSONDecoder().decode(ConformanceModel.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        }
        return builtIn
    }

    /// The documented model: namespaces x, y, z; pods a, b, c; 10.10.<ns>.<pod>.
    public static var builtIn: ConformanceModel {
        var namespaces: [String: NamespaceSpec] = [:]
        var pods: [String: PodSpec] = [:]
        for (ni, ns) in ["x", "y", "z"].enumerated() {
            namespaces[ns] = NamespaceSpec(labels: ["ns": ns, "kubernetes.io/metadata.name": ns])
            for (pi, pod) in ["a", "b", "c"].enumerated() {
                var ports: [ContainerPort] = []
                for port in [80, 81] {
                    for proto in ["tcp", "udp", "sctp"] {
                        ports.append(ContainerPort(name: "serve-\(port)-\(proto)", containerPort: port, protocol: proto.uppercased()))
                    }
                }
                pods["\(ns)/\(pod)"] = PodSpec(namespace: ns, name: pod, labels: ["pod": pod],
                                              ip: "10.10.\(ni).\(pi + 1)", containerPorts: ports)
            }
        }
        return ConformanceModel(namespaces: namespaces, pods: pods)
    }
}

/// `expect.json`: one truth table, more under `also`.
public struct Expectation: Codable, Sendable {
    public struct Exception: Codable, Sendable {
        public var from: String
        public var to: String
        public var allowed: Bool
    }
    public struct ModelOverrides: Codable, Sendable {
        public var namespace_labels: [String: [String: String]]?
        public var pod_labels: [String: [String: String]]?
    }
    /// Probes from each pod's own node (the node's own stack, not a pod)
    /// to the pod: Kubernetes' node rule says they are always allowed.
    public struct NodeProbes: Codable, Sendable {
        public struct Exception: Codable, Sendable {
            public var to: String
            public var allowed: Bool
        }
        public var `default`: Bool
        public var exceptions: [Exception]?
    }
    public struct Table: Codable, Sendable {
        public var port: Int
        public var `protocol`: String
        public var `default`: Bool
        public var exceptions: [Exception]
        public var ignore_loopback: Bool?
        public var node: NodeProbes?
    }

    public var port: Int
    public var `protocol`: String
    public var `default`: Bool
    public var exceptions: [Exception]
    public var ignore_loopback: Bool?
    public var node: NodeProbes?
    public var also: [Table]?
    public var model_overrides: ModelOverrides?

    public var tables: [Table] {
        [Table(port: port, protocol: `protocol`, default: `default`, exceptions: exceptions, ignore_loopback: ignore_loopback, node: node)]
            + (also ?? []).map { t in
                var t = t
                if t.ignore_loopback == nil { t.ignore_loopback = ignore_loopback }
                return t
            }
    }
}

public struct ConformanceCase: Sendable {
    public var name: String
    public var directory: String
    public var policyYAML: String
    public var expectation: Expectation

    public static func load(_ dir: String) throws -> ConformanceCase {
        let url = URL(fileURLWithPath: dir)
        let policy = try String(contentsOf: url.appendingPathComponent("policy.yaml"), encoding: .utf8)
        let expect = try JSONDecoder().decode(Expectation.self, from: Data(contentsOf: url.appendingPathComponent("expect.json")))
        return ConformanceCase(name: url.lastPathComponent, directory: dir, policyYAML: policy, expectation: expect)
    }

    /// Case folders (those with an expect.json) under each directory, or the
    /// directory itself if it is one.
    public static func discover(_ dirs: [String]) throws -> [ConformanceCase] {
        var result: [ConformanceCase] = []
        for dir in dirs {
            if FileManager.default.fileExists(atPath: dir + "/expect.json") {
                result.append(try load(dir))
                continue
            }
            for name in try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
            where FileManager.default.fileExists(atPath: "\(dir)/\(name)/expect.json") {
                result.append(try load("\(dir)/\(name)"))
            }
        }
        return result
    }
}
