import Yams

/// Everything the datastore holds, decoded and validated as one batch.
public struct ResourceSet: Sendable, Equatable {
    public var namespaces: [String: Namespace] = [:]
    /// Keyed "namespace/name".
    public var pods: [String: Pod] = [:]
    public var policies: [Policy] = []
    /// Keyed by name; always holds the built-in "default" tier.
    public var tiers: [String: Tier] = ["default": .defaultTier]
    public var networkSets: [NetworkSet] = []
    public var profiles: [String: Profile] = [:]

    public init() {}

    /// Decodes every document of every file. Any error anywhere rejects the
    /// whole batch, with every error found.
    public static func decode(files: [(name: String, text: String)]) throws(ValidationErrors) -> ResourceSet {
        var set = ResourceSet()
        var errors: [ValidationError] = []
        var seen: [String: ResourceRef] = [:]
        for file in files {
            let documents: [Node]
            do {
                documents = try parseDocuments(file.text)
            } catch {
                errors.append(ValidationError(file: file.name, resource: "", field: "", reason: "invalid YAML: \(error)"))
                continue
            }
            for (index, doc) in documents.enumerated() {
                let ctx = DecodeContext(file: file.name, resource: "document \(index + 1)")
                let resource = ResourceDecoder.decode(YNode(node: doc, path: "", ctx: ctx), file: file.name)
                errors += ctx.errors
                guard ctx.errors.isEmpty, let resource else { continue }
                let ref = resource.ref
                // Policies by their Calico name, so a Kubernetes and a Calico
                // NetworkPolicy of the same name can coexist, as in Calico.
                var identity = "\(ref.kind)/\(ref.namespace ?? "")/\(ref.name)"
                if case .policy(let p) = resource { identity = "Policy/\(p.namespace ?? "")/\(p.name)" }
                if let first = seen[identity] {
                    errors.append(ValidationError(file: file.name, resource: ref.description, field: "metadata.name",
                                                  reason: "duplicate: already defined in \(first.file)"))
                    continue
                }
                seen[identity] = ref
                set.add(resource)
            }
        }
        // Cross-resource checks: every policy's tier must exist.
        for p in set.policies where set.tiers[p.tier] == nil {
            errors.append(ValidationError(file: p.ref.file, resource: p.ref.description, field: "spec.tier",
                                          reason: "tier '\(p.tier)' does not exist"))
        }
        if !errors.isEmpty { throw ValidationErrors(errors) }
        set.policies.sort { $0.ref < $1.ref }
        set.networkSets.sort { $0.ref < $1.ref }
        return set
    }

    /// Parses a multi-document stream completely before anything is used:
    /// a syntax error in a later document must reject the whole file.
    static func parseDocuments(_ text: String) throws -> [Node] {
        let parser = try Parser(yaml: text)
        var nodes: [Node] = []
        while let node = try parser.nextRoot() {
            // An empty document (`---` alone, or only comments) is skipped.
            if case .scalar(let s) = node, s.string.isEmpty { continue }
            nodes.append(node)
        }
        return nodes
    }

    mutating func add(_ resource: Resource) {
        switch resource {
        case .namespace(let ns): namespaces[ns.name] = ns
        case .pod(let pod): pods[pod.key] = pod
        case .policy(let p): policies.append(p)
        case .tier(let t): tiers[t.name] = t
        case .networkSet(let n): networkSets.append(n)
        case .profile(let p): profiles[p.name] = p
        }
    }
}

/// One decoded document.
enum Resource {
    case namespace(Namespace)
    case pod(Pod)
    case policy(Policy)
    case tier(Tier)
    case networkSet(NetworkSet)
    case profile(Profile)

    var ref: ResourceRef {
        switch self {
        case .namespace(let n): return n.ref
        case .pod(let p): return p.ref
        case .policy(let p): return p.ref
        case .tier(let t): return t.ref
        case .networkSet(let n): return n.ref
        case .profile(let p): return p.ref
        }
    }
}
