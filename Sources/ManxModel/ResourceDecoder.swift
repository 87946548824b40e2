import ManxSelectors

/// Dispatches a document on apiVersion and kind, and decodes the metadata
/// every kind shares.
enum ResourceDecoder {
    static func decode(_ doc: YNode, file: String) -> Resource? {
        guard let top = doc.fields() else { return nil }
        guard let apiVersion = top["apiVersion"]?.string else {
            doc.ctx.fail("apiVersion", "missing")
            return nil
        }
        guard let kind = top["kind"]?.string else {
            doc.ctx.fail("kind", "missing")
            return nil
        }
        switch (apiVersion, kind) {
        case ("v1", "Namespace"):
            return KubernetesDecoder.namespace(top, file: file, ctx: doc.ctx).map(Resource.namespace)
        case ("v1", "Pod"):
            return KubernetesDecoder.pod(top, file: file, ctx: doc.ctx).map(Resource.pod)
        case ("networking.k8s.io/v1", "NetworkPolicy"):
            return KubernetesDecoder.networkPolicy(top, file: file, ctx: doc.ctx).map(Resource.policy)
        case ("projectcalico.org/v3", "NetworkPolicy"), ("projectcalico.org/v3", "GlobalNetworkPolicy"):
            return CalicoDecoder.policy(top, global: kind == "GlobalNetworkPolicy", file: file, ctx: doc.ctx).map(Resource.policy)
        case ("projectcalico.org/v3", "Profile"):
            return CalicoDecoder.profile(top, file: file, ctx: doc.ctx).map(Resource.profile)
        case ("projectcalico.org/v3", "Tier"):
            return CalicoDecoder.tier(top, file: file, ctx: doc.ctx).map(Resource.tier)
        case ("projectcalico.org/v3", "NetworkSet"), ("projectcalico.org/v3", "GlobalNetworkSet"):
            return CalicoDecoder.networkSet(top, global: kind == "GlobalNetworkSet", file: file, ctx: doc.ctx).map(Resource.networkSet)
        case ("projectcalico.org/v3", "IPPool"):
            return NetworkingDecoder.ipPool(top, file: file, ctx: doc.ctx).map(Resource.ipPool)
        case ("projectcalico.org/v3", "Node"):
            return NetworkingDecoder.node(top, file: file, ctx: doc.ctx).map(Resource.node)
        case ("projectcalico.org/v3", "FelixConfiguration"):
            return NetworkingDecoder.felixConfiguration(top, file: file, ctx: doc.ctx).map(Resource.felixConfiguration)
        case ("projectcalico.org/v3", "WorkloadEndpoint"):
            return NetworkingDecoder.workloadEndpoint(top, file: file, ctx: doc.ctx).map(Resource.workloadEndpoint)
        case ("manx.io/v1", "IPAMBlock"):
            return NetworkingDecoder.ipamBlock(top, file: file, ctx: doc.ctx).map(Resource.ipamBlock)
        default:
            // Named as far as its metadata says, so the error says which one.
            if let meta = top["metadata"]?.node.mapping, let name = meta["name"]?.scalar?.string {
                let namespace = meta["namespace"]?.scalar?.string
                doc.ctx.resource = "\(kind) \(namespace.map { "\($0)/" } ?? "")\(name)"
            }
            doc.ctx.fail("kind", "unknown kind '\(kind)' in apiVersion '\(apiVersion)'")
            return nil
        }
    }

    struct Metadata {
        var name: String
        var namespace: String?
        var labels: [String: String]
        var annotations: [String: String]
    }

    static let metadataFields: Set<String> = [
        "name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation",
        "creationTimestamp", "managedFields", "ownerReferences", "finalizers", "generateName",
    ]

    /// Decodes `metadata` and names the resource in the context, so every
    /// later error says which resource it is about.
    static func metadata(_ top: [String: YNode], kind: String, namespaced: Bool, ctx: DecodeContext) -> Metadata? {
        guard let meta = top["metadata"]?.fields(allowed: metadataFields) else {
            if top["metadata"] == nil { ctx.fail("metadata", "missing") }
            return nil
        }
        guard let name = meta["name"]?.string, !name.isEmpty else {
            ctx.resource = kind
            ctx.fail("metadata.name", "missing")
            return nil
        }
        var namespace: String? = nil
        if namespaced {
            namespace = meta["namespace"]?.string ?? "default"
        } else if meta["namespace"] != nil {
            ctx.resource = "\(kind) \(name)"
            ctx.fail("metadata.namespace", "\(kind) is not namespaced")
        }
        ctx.resource = "\(kind) \(namespace.map { "\($0)/" } ?? "")\(name)"
        if let reason = validateDNSName(name) { ctx.fail("metadata.name", reason) }
        if let ns = namespace, let reason = validateDNSLabel(ns) { ctx.fail("metadata.namespace", reason) }
        let labels = meta["labels"]?.stringMap ?? [:]
        if let labelNode = meta["labels"] { validateLabels(labels, path: labelNode.path, ctx: ctx) }
        return Metadata(name: name, namespace: namespace, labels: labels, annotations: meta["annotations"]?.stringMap ?? [:])
    }

    static func validateLabels(_ labels: [String: String], path: String, ctx: DecodeContext) {
        for (k, v) in labels.sorted(by: { $0.key < $1.key }) {
            if let reason = LabelValidation.validateKey(k) { ctx.fail("\(path).\(k)", "invalid label key: \(reason)") }
            if let reason = LabelValidation.validateValue(v) { ctx.fail("\(path).\(k)", "invalid label value '\(v)': \(reason)") }
        }
    }

    /// DNS-1123 subdomain: what Kubernetes allows for most object names.
    static func validateDNSName(_ s: String) -> String? {
        if s.utf8.count > 253 && s.count > 253 { return "name is longer than 253 characters" }
        guard isDNS(s, dots: true) else {
            return "'\(s)' is not a valid name (lowercase letters, digits, '-' and '.', starting and ending alphanumeric)"
        }
        return nil
    }

    /// DNS-1123 label: namespace names.
    static func validateDNSLabel(_ s: String) -> String? {
        if s.utf8.count > 63 && s.count > 63 { return "'\(s)' is longer than 63 characters" }
        guard isDNS(s, dots: false) else {
            return "'\(s)' is not a valid namespace name (lowercase letters, digits and '-', starting and ending alphanumeric)"
        }
        return nil
    }

    /// Lowercase ASCII letters, digits, '-' (and '.'), starting and ending
    /// with a letter or digit; on the bytes (every resource's name is
    /// checked: walking Characters was a twentieth of decoding).
    static func isDNS(_ s: String, dots: Bool) -> Bool {
        func alphanumeric(_ c: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
        }
        let u = s.utf8
        guard let first = u.first, let last = u.last, alphanumeric(first), alphanumeric(last) else { return false }
        return u.allSatisfy { alphanumeric($0) || $0 == UInt8(ascii: "-") || (dots && $0 == UInt8(ascii: ".")) }
    }

    /// IANA service name rules, which Kubernetes applies to port names.
    static func validatePortName(_ s: String) -> String? {
        guard (1...15).contains(s.count) else { return "port name '\(s)' must be 1-15 characters" }
        guard s.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }) else {
            return "port name '\(s)' may contain only lowercase letters, digits and '-'"
        }
        guard s.contains(where: \.isLetter) else { return "port name '\(s)' must contain a letter" }
        guard s.first != "-", s.last != "-", !s.contains("--") else {
            return "port name '\(s)' must not start or end with '-' or contain '--'"
        }
        return nil
    }
}

extension Character {
    var isLetterOrNumber: Bool { isASCII && (isLetter || isNumber) }
}
