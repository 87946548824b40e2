import Foundation
import ManxEtcd
import ManxModel

/// The CNI versions manx-cni speaks.
public enum CNIVersion {
    public static let current = "1.0.0"
    public static let supported = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]

    /// CHECK exists from 0.4.0 on; results name the IP version before 1.0.0.
    static func atLeast(_ version: String, _ minimum: String) -> Bool {
        func parts(_ v: String) -> [Int] { v.split(separator: ".").map { Int($0) ?? 0 } }
        return parts(version).lexicographicallyPrecedes(parts(minimum)) == false
    }
}

/// The network configuration manx-cni reads on stdin.
public struct NetConf: Sendable, Equatable {
    public enum Datastore: Sendable, Equatable {
        /// `datastore`: a directory of YAML (the default).
        case directory(String)
        /// `datastore_type: etcdv3` with `etcd_endpoints` (comma-separated URLs), as in Calico's CNI configuration.
        case etcd(EtcdClient)

        public static func == (a: Datastore, b: Datastore) -> Bool {
            switch (a, b) {
            case (.directory(let x), .directory(let y)): return x == y
            case (.etcd(let x), .etcd(let y)): return x.endpoints == y.endpoints
            default: return false
            }
        }
    }

    public var cniVersion: String
    public var name: String
    public var type: String
    /// Where resources and IPAM live.
    public var datastore: Datastore
    /// The node's name: the WorkloadEndpoint's spec.node, the IPAM affinity
    /// and the daemon's state directory (/run/manx/<nodename>).
    public var nodename: String
    /// Pod MTU; nil: the daemon's published podMTU, else 1500.
    public var mtu: Int?
    /// How long ADD waits for manxd to program the pod's policy.
    public var timeoutSeconds: Double
    /// The previous plugin's result (chained ADD, CHECK, DEL).
    public var prevResult: JSONValue?

    public static let defaultTimeout: Double = 30

    /// Decodes and validates; the version check comes first, as in libcni.
    public static func parse(_ text: String) throws(CNIError) -> NetConf {
        let object: [String: JSONValue]
        switch JSONValue.parse(text) {
        case .failure(let e): throw CNIError(.decodingFailure, "the network configuration on stdin is not valid JSON: \(e.reason)")
        case .success(let value):
            guard let o = value.objectValue else {
                throw CNIError(.decodingFailure, "the network configuration on stdin must be a JSON object, got \(value.typeName)")
            }
            object = o
        }
        func optionalString(_ key: String) throws(CNIError) -> String? {
            switch object[key] {
            case nil, .null?: return nil
            case .string(let s)?: return s
            case let other?: throw CNIError(.invalidNetworkConfig, "\(key) must be a string, got \(other.typeName)")
            }
        }
        func requiredString(_ key: String) throws(CNIError) -> String {
            guard let s = try optionalString(key) else { throw CNIError(.invalidNetworkConfig, "the network configuration has no \(key)") }
            guard !s.isEmpty else { throw CNIError(.invalidNetworkConfig, "the network configuration's \(key) is empty") }
            return s
        }
        let version = try requiredString("cniVersion")
        guard CNIVersion.supported.contains(version) else {
            throw CNIError(.incompatibleVersion, "incompatible CNI version \(version): manx-cni supports \(CNIVersion.supported.joined(separator: ", "))")
        }
        let name = try optionalString("name") ?? ""
        let type = try optionalString("type") ?? ""
        let datastore: Datastore
        switch try optionalString("datastore_type") ?? "directory" {
        case "directory":
            datastore = .directory(try requiredString("datastore"))
        case "etcdv3":
            let endpoints = try requiredString("etcd_endpoints").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            do {
                datastore = .etcd(try EtcdClient(endpoints: endpoints))
            } catch {
                throw CNIError(.invalidNetworkConfig, "etcd_endpoints: \(error.message)")
            }
        case let other:
            throw CNIError(.invalidNetworkConfig, "datastore_type '\(other)' is not one of directory, etcdv3")
        }
        let nodename = try requiredString("nodename")
        var conf = NetConf(cniVersion: version, name: name, type: type, datastore: datastore, nodename: nodename,
                           mtu: nil, timeoutSeconds: defaultTimeout, prevResult: nil)
        switch object["mtu"] {
        case nil, .null?: break
        case .int(let m)? where (68...65535).contains(m): conf.mtu = Int(m)
        case .int(let m)?: throw CNIError(.invalidNetworkConfig, "mtu \(m) is out of range (68-65535)")
        case let other?: throw CNIError(.invalidNetworkConfig, "mtu must be an integer, got \(other.typeName) \(other.text)")
        }
        switch object["timeoutSeconds"] {
        case nil, .null?: break
        case .int(let t)? where t > 0: conf.timeoutSeconds = Double(t)
        case .double(let t)? where t > 0 && t.isFinite: conf.timeoutSeconds = t
        case let other?: throw CNIError(.invalidNetworkConfig, "timeoutSeconds must be a positive number, got \(other.text)")
        }
        switch object["prevResult"] {
        case nil, .null?: break
        case .object(let o)?: conf.prevResult = .object(o)
        case let other?: throw CNIError(.invalidNetworkConfig, "prevResult must be an object, got \(other.typeName)")
        }
        return conf
    }
}

/// The CNI_* environment of one invocation.
public struct CNIEnvironment: Sendable, Equatable {
    public enum Command: String, Sendable { case add = "ADD", del = "DEL", check = "CHECK", version = "VERSION" }

    public var command: Command
    public var containerID: String
    public var netns: String
    public var ifname: String
    /// CNI_ARGS, parsed.
    public var args: [String: String]
    public var path: String

    public var podNamespace: String? { args["K8S_POD_NAMESPACE"].flatMap { $0.isEmpty ? nil : $0 } }
    public var podName: String? { args["K8S_POD_NAME"].flatMap { $0.isEmpty ? nil : $0 } }

    public static func parse(_ env: [String: String]) throws(CNIError) -> CNIEnvironment {
        guard let raw = env["CNI_COMMAND"], !raw.isEmpty else { throw CNIError(.invalidEnvironment, "CNI_COMMAND is not set") }
        guard let command = Command(rawValue: raw) else {
            throw CNIError(.invalidEnvironment, "CNI_COMMAND '\(raw)' is not one of ADD, DEL, CHECK, VERSION")
        }
        var e = CNIEnvironment(command: command, containerID: env["CNI_CONTAINERID"] ?? "", netns: env["CNI_NETNS"] ?? "",
                               ifname: env["CNI_IFNAME"] ?? "", args: [:], path: env["CNI_PATH"] ?? "")
        guard command != .version else { return e }
        if e.containerID.isEmpty { throw CNIError(.invalidEnvironment, "CNI_CONTAINERID is not set") }
        if let problem = containerIDProblem(e.containerID) { throw CNIError(.invalidEnvironment, "CNI_CONTAINERID: \(problem)") }
        if e.ifname.isEmpty { throw CNIError(.invalidEnvironment, "CNI_IFNAME is not set") }
        if let problem = WorkloadEndpoint.interfaceNameProblem(e.ifname) { throw CNIError(.invalidEnvironment, "CNI_IFNAME: \(problem)") }
        if command != .del && e.netns.isEmpty { throw CNIError(.invalidEnvironment, "CNI_NETNS is not set") }
        if e.netns.contains(where: { $0.isWhitespace || $0 == "\"" || $0 == "'" }) {
            throw CNIError(.invalidEnvironment, "CNI_NETNS: '\(e.netns)' must not contain whitespace or quotes")
        }
        for pair in (env["CNI_ARGS"] ?? "").split(separator: ";", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2, !kv[0].isEmpty else {
                throw CNIError(.invalidEnvironment, "CNI_ARGS: '\(pair)' is not KEY=VALUE (pairs are separated by ';')")
            }
            e.args[String(kv[0])] = String(kv[1])
        }
        return e
    }

    /// The spec's rule for container ids: an alphanumeric, then
    /// alphanumerics, '_', '.' or '-'. (The id also names things in
    /// commands the plugin runs.)
    static func containerIDProblem(_ s: String) -> String? {
        func allowed(_ c: Character) -> Bool { c.isASCII && (c.isLetter || c.isNumber || c == "_" || c == "." || c == "-") }
        guard let first = s.first, first.isASCII, first.isLetter || first.isNumber, s.allSatisfy(allowed) else {
            return "'\(s)' must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
        }
        return nil
    }
}
