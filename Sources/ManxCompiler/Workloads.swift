import ManxModel
import ManxSelectors

/// A pod as policy sees it: its labels plus the labels Calico adds, its
/// namespace's labels, and its named ports.
public struct Workload: Hashable, Sendable {
    public var pod: Pod
    public var labels: [String: String]
    public var namespaceLabels: [String: String]

    public var ip: IPv4Address? { pod.ip }
    public var namespace: String { pod.namespace }

    init(pod: Pod, namespace: Namespace?) {
        self.pod = pod
        var labels = pod.labels
        labels["projectcalico.org/namespace"] = pod.namespace
        labels["projectcalico.org/orchestrator"] = "k8s"
        labels["projectcalico.org/serviceaccount"] = pod.serviceAccount
        self.labels = labels
        var nsLabels = namespace?.labels ?? [:]
        nsLabels["projectcalico.org/name"] = pod.namespace
        nsLabels["kubernetes.io/metadata.name"] = pod.namespace
        self.namespaceLabels = nsLabels
    }

    public static func all(in resources: ResourceSet) -> [Workload] {
        resources.pods.values.sorted { $0.key < $1.key }.map {
            Workload(pod: $0, namespace: resources.namespaces[$0.namespace])
        }
    }

    /// Port numbers of this workload's ports with that name and protocol.
    public func namedPorts(_ name: String, proto: IPProtocol?) -> [NamedPort] {
        pod.ports.filter { $0.name == name && (proto == nil || $0.proto == proto) }
    }
}

extension EndpointMatch {
    /// Whether this selects the workload (namespace scope, labels, service account).
    public func matches(_ w: Workload) -> Bool {
        switch namespaces {
        case .any: break
        case .named(let ns): if w.namespace != ns { return false }
        case .matching(let sel): if !sel.matches(w.namespaceLabels) { return false }
        }
        if let sa = serviceAccountSelector, !sa.matches(["projectcalico.org/name": w.pod.serviceAccount]) { return false }
        return selector.matches(w.labels)
    }
}

extension EntityRule {
    /// The address side of a rule with its ports removed: what a peer is
    /// tested against. Rules that share it share one matcher.
    var peerPart: EntityRule {
        var e = self
        e.ports = []
        e.notPorts = []
        return e
    }

    /// Whether a peer in `prefix` (a region no other rule CIDR splits), with
    /// `workload` when it is one, matches. Ports are not considered.
    func matchesPeer(prefix: CIDR, workload: Workload?) -> Bool {
        if !nets.isEmpty && !nets.contains(where: { $0.contains(prefix) }) { return false }
        if notNets.contains(where: { $0.contains(prefix) }) { return false }
        if let endpoints {
            guard let workload, endpoints.matches(workload) else { return false }
        }
        if let notSelector, let workload, notSelector.matches(workload) { return false }
        if !serviceAccountNames.isEmpty {
            guard let workload, serviceAccountNames.contains(workload.pod.serviceAccount) else { return false }
        }
        return true
    }
}
