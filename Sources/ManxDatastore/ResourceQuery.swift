import ManxModel

/// What `bpfctl get` selects from a datastore's content: the resources of
/// one kind, by name and namespace, as calicoctl selects them.
public struct ResourceQuery: Sendable {
    /// The kind, as its resources say it.
    public let kind: String
    public let name: String?
    /// nil: every namespace.
    public let namespace: String?
    public let namespaced: Bool

    /// Kinds by the names a user may type (lowercase): the kind, its plural
    /// and calicoctl's short names; the flag says whether it is namespaced.
    static let kinds: [(kind: String, namespaced: Bool, names: [String])] = [
        ("NetworkPolicy", true, ["networkpolicy", "networkpolicies", "netpol", "netpols", "np", "policy", "policies"]),
        ("GlobalNetworkPolicy", false, ["globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"]),
        ("NetworkSet", true, ["networkset", "networksets", "netset", "netsets"]),
        ("GlobalNetworkSet", false, ["globalnetworkset", "globalnetworksets", "gns"]),
        ("Tier", false, ["tier", "tiers"]),
        ("Profile", false, ["profile", "profiles", "pro", "pros"]),
        ("IPPool", false, ["ippool", "ippools", "ipp", "ipps", "pool", "pools"]),
        ("Node", false, ["node", "nodes", "no", "nos"]),
        ("FelixConfiguration", false, ["felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"]),
        ("WorkloadEndpoint", true, ["workloadendpoint", "workloadendpoints", "wep", "weps"]),
        ("Namespace", false, ["namespace", "namespaces", "ns"]),
        ("Pod", true, ["pod", "pods", "po"]),
        ("IPAMBlock", false, ["ipamblock", "ipamblocks"]),
    ]

    /// `namespace` nil with `allNamespaces` false: the `default` namespace,
    /// as calicoctl has it. Throws a message that lists the kinds.
    public init(kind text: String, name: String? = nil, namespace: String? = nil, allNamespaces: Bool = false) throws(QueryError) {
        guard let entry = Self.kinds.first(where: { $0.names.contains(text.lowercased()) }) else {
            throw QueryError("unknown resource type '\(text)'; one of: \(Self.kinds.map { $0.names[0] }.joined(separator: ", "))")
        }
        kind = entry.kind
        namespaced = entry.namespaced
        self.name = name
        if !namespaced && namespace != nil { throw QueryError("\(kind) is not namespaced, so it takes no --namespace") }
        self.namespace = namespaced && !allNamespaces ? namespace ?? "default" : nil
    }

    public struct QueryError: Error, Sendable, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    public struct Match: Sendable {
        public let key: String
        public let document: ResourceDocument
    }

    /// The matching resources of every key that decodes, by namespace and
    /// name, and the errors of keys that do not (which select nothing).
    public func select(_ keys: [String: String]) -> (matches: [Match], errors: [ValidationError]) {
        var matches: [Match] = [], errors: [ValidationError] = []
        for (key, text) in keys.sorted(by: { $0.key < $1.key }) {
            do {
                for document in try ResourceSet.documents(file: key, text: text) where selects(document.header) {
                    matches.append(Match(key: key, document: document))
                }
            } catch {
                errors += error.errors
            }
        }
        matches.sort { ($0.document.header.namespace ?? "", $0.document.header.name) < ($1.document.header.namespace ?? "", $1.document.header.name) }
        return (matches, errors)
    }

    func selects(_ h: ResourceHeader) -> Bool {
        h.kind == kind && (name == nil || h.name == name) && (namespace == nil || h.namespace == namespace)
    }

    /// What a named resource that is not there is called in the error.
    public var missing: String { "\(kind) \(namespace.map { "\($0)/" } ?? "")\(name ?? "")" }
}
