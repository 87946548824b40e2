import ManxModel

/// Where each resource lives in a keyed datastore (etcd).
///
/// Calico's own layout for its kinds, `/calico/resources/v3/projectcalico.org/<plural>/[<namespace>/]<name>`,
/// and the same shape for the Kubernetes kinds, with their API group in place
/// of projectcalico.org (`core` for the core group):
///
///     /calico/resources/v3/core/namespaces/<name>
///     /calico/resources/v3/core/pods/<namespace>/<name>
///     /calico/resources/v3/networking.k8s.io/networkpolicies/<namespace>/<name>
///
/// IPAM uses Calico's IPAM keys: a block under
/// `/calico/ipam/v2/assignment/ipv4/block/<address>-<prefix length>`, a
/// node's claim on it under `/calico/ipam/v2/host/<node>/ipv4/block/...`
/// and each handle under `/calico/ipam/v2/handle/<handle>`. The block's
/// value is Manx's IPAMBlock resource (manx.io/v1), not Calico's
/// AllocationBlock encoding.
///
/// Each key holds one resource as JSON (what `bpfctl apply` writes), or YAML.
public enum ResourceKeys {
    public static let prefix = "/calico/resources/v3/"
    public static let blockPrefix = "/calico/ipam/v2/assignment/ipv4/block/"
    /// What a node follows: every resource, and the IPAM blocks (routes).
    public static let watchPrefix = "/calico/"

    public static func isFollowed(_ key: String) -> Bool { key.hasPrefix(prefix) || key.hasPrefix(blockPrefix) }

    public static func blockKey(_ cidr: CIDR) -> String { blockPrefix + blockName(cidr) }
    public static func affinityKey(node: String, _ cidr: CIDR) -> String { "/calico/ipam/v2/host/\(node)/ipv4/block/\(blockName(cidr))" }
    public static func handleKey(_ handle: String) -> String { "/calico/ipam/v2/handle/\(handle)" }
    /// Calico's name for a block: its CIDR with '-' for '/'.
    static func blockName(_ cidr: CIDR) -> String { "\(cidr.address)-\(cidr.prefixLength)" }

    struct Kind {
        var group: String
        var plural: String
        var namespaced: Bool
    }

    /// Keyed by "apiVersion kind".
    static let kinds: [String: Kind] = [
        "v1 Namespace": Kind(group: "core", plural: "namespaces", namespaced: false),
        "v1 Pod": Kind(group: "core", plural: "pods", namespaced: true),
        "networking.k8s.io/v1 NetworkPolicy": Kind(group: "networking.k8s.io", plural: "networkpolicies", namespaced: true),
        "projectcalico.org/v3 NetworkPolicy": Kind(group: "projectcalico.org", plural: "networkpolicies", namespaced: true),
        "projectcalico.org/v3 GlobalNetworkPolicy": Kind(group: "projectcalico.org", plural: "globalnetworkpolicies", namespaced: false),
        "projectcalico.org/v3 Tier": Kind(group: "projectcalico.org", plural: "tiers", namespaced: false),
        "projectcalico.org/v3 Profile": Kind(group: "projectcalico.org", plural: "profiles", namespaced: false),
        "projectcalico.org/v3 NetworkSet": Kind(group: "projectcalico.org", plural: "networksets", namespaced: true),
        "projectcalico.org/v3 GlobalNetworkSet": Kind(group: "projectcalico.org", plural: "globalnetworksets", namespaced: false),
        "projectcalico.org/v3 IPPool": Kind(group: "projectcalico.org", plural: "ippools", namespaced: false),
        "projectcalico.org/v3 Node": Kind(group: "projectcalico.org", plural: "nodes", namespaced: false),
        "projectcalico.org/v3 FelixConfiguration": Kind(group: "projectcalico.org", plural: "felixconfigurations", namespaced: false),
        "projectcalico.org/v3 WorkloadEndpoint": Kind(group: "projectcalico.org", plural: "workloadendpoints", namespaced: true),
    ]

    /// The key a resource is stored under.
    public static func key(_ h: ResourceHeader) -> String? {
        if h.apiVersion == "manx.io/v1" && h.kind == "IPAMBlock" {
            // IPAMBlock.resourceName: the CIDR's numbers joined by '-'.
            let parts = h.name.split(separator: "-")
            guard parts.count == 5 else { return nil }
            return blockPrefix + parts[0..<4].joined(separator: ".") + "-" + parts[4]
        }
        guard let kind = kinds["\(h.apiVersion) \(h.kind)"] else { return nil }
        let ns = kind.namespaced ? "\(h.namespace ?? "default")/" : ""
        return "\(prefix)\(kind.group)/\(kind.plural)/\(ns)\(h.name)"
    }

    /// A keyed datastore holds one resource per key, under its own key: a
    /// value that names another resource would let a writer of one key
    /// shadow or duplicate another.
    public static func check(key: String, _ file: ResourceSet.DecodedFile) -> [ValidationError] {
        guard file.errors.isEmpty else { return [] }
        guard file.headers.count == 1, let header = file.headers.first else {
            return [ValidationError(file: key, resource: "", field: "",
                                    reason: "a key holds exactly one resource, this one holds \(file.headers.count)")]
        }
        guard let expected = self.key(header), expected == key else {
            return [ValidationError(file: key, resource: header.description, field: "metadata.name",
                                    reason: "stored under the wrong key: this resource belongs under \(self.key(header) ?? "(no key)")")]
        }
        return []
    }
}
