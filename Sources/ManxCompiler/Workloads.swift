import ManxModel
import ManxSelectors

/// A pod as policy sees it: its labels plus the labels Calico adds, its
/// namespace's labels, and its named ports.
///
/// Immutable, and held by reference: the compiler copies workloads through
/// every stage (caches, peers, regions), and a copy of the fields (a pod
/// is a dozen strings and dictionaries) was a tenth of a compile.
public struct Workload: Hashable, Sendable {
    private final class Storage: Sendable {
        let pod: Pod
        let labels: [String: String]
        let namespaceLabels: [String: String]
        /// `pod.key` and `pod.interface`, computed once.
        let key: String
        let interface: String?
        init(pod: Pod, labels: [String: String], namespaceLabels: [String: String]) {
            self.pod = pod
            self.labels = labels
            self.namespaceLabels = namespaceLabels
            key = pod.key
            interface = pod.interface
        }
    }
    private let storage: Storage

    public var pod: Pod { storage.pod }
    public var labels: [String: String] { storage.labels }
    public var namespaceLabels: [String: String] { storage.namespaceLabels }
    /// The pod's key (namespace/name).
    public var key: String { storage.key }
    /// The pod's host-side interface, if it is local.
    public var interface: String? { storage.interface }
    public var ip: IPv4Address? { pod.ip }
    public var namespace: String { pod.namespace }

    public static func == (a: Workload, b: Workload) -> Bool {
        a.storage === b.storage || (a.pod == b.pod && a.labels == b.labels && a.namespaceLabels == b.namespaceLabels)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(pod)
        hasher.combine(labels)
        hasher.combine(namespaceLabels)
    }

    init(pod: Pod, namespace: Namespace?, profiles: [String: Profile] = [:]) {
        var labels: [String: String] = [:]
        // Labels the endpoint's profiles apply (the namespace's as pcns.*,
        // as Calico's kns profile does), then the pod's own, then Calico's.
        for (k, v) in namespace?.labels ?? [:] { labels["pcns.\(k)"] = v }
        for name in Workload.profileNames(pod) {
            labels.merge(profiles[name]?.labelsToApply ?? [:]) { _, new in new }
        }
        labels.merge(pod.labels) { _, new in new }
        labels["projectcalico.org/namespace"] = pod.namespace
        labels["projectcalico.org/orchestrator"] = pod.orchestrator.rawValue
        if pod.orchestrator == .k8s { labels["projectcalico.org/serviceaccount"] = pod.serviceAccount }
        storage = Storage(pod: pod, labels: labels, namespaceLabels: Workload.namespaceLabels(pod.namespace, namespace))
    }

    public static func all(in resources: ResourceSet) -> [Workload] {
        resources.pods.values.sorted { $0.key < $1.key }.map {
            Workload(pod: $0, namespace: resources.namespaces[$0.namespace], profiles: resources.profiles)
        }
    }

    /// A namespace's labels as namespace selectors see them.
    static func namespaceLabels(_ name: String, _ namespace: Namespace?) -> [String: String] {
        var labels = namespace?.labels ?? [:]
        labels["projectcalico.org/name"] = name
        labels["kubernetes.io/metadata.name"] = name
        return labels
    }

    /// The profiles an endpoint has, in evaluation order: a Kubernetes
    /// pod's namespace and service account, another runtime's own list.
    static func profileNames(_ pod: Pod) -> [String] {
        pod.profiles ?? ["kns.\(pod.namespace)", "ksa.\(pod.namespace).\(pod.serviceAccount)"]
    }

    var profileNames: [String] { Workload.profileNames(pod) }

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
        case .matching(let sel): if !sel.matchesNamespace(w.namespaceLabels, namespaced: true) { return false }
        }
        if let sa = serviceAccountSelector, !sa.matches(["projectcalico.org/name": w.pod.serviceAccount]) { return false }
        return selector.matches(w.labels)
    }
}

/// A network set as a policy peer, with its namespace's labels.
struct NetworkSetPeer: Hashable {
    var set: NetworkSet
    var namespaceLabels: [String: String]
}

/// A policy peer: a region of address space (no rule CIDR splits it), the
/// workload when it is one pod's address, and the network sets it lies in.
struct Peer {
    var cidr: CIDR
    var workload: Workload?
    var networkSets: [NetworkSetPeer] = []
}

extension EndpointMatch {
    /// Calico selects an address when it selects the workload that has it,
    /// or any network set that contains it.
    func matches(_ peer: Peer) -> Bool {
        if let w = peer.workload, matches(w) { return true }
        return peer.networkSets.contains { ns in
            guard serviceAccountSelector == nil else { return false }
            switch namespaces {
            case .any: break
            case .named(let name): if ns.set.namespace != name { return false }
            case .matching(let sel):
                if !sel.matchesNamespace(ns.namespaceLabels, namespaced: ns.set.namespace != nil) { return false }
            }
            return selector.matches(ns.set.labels)
        }
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

    /// Whether the peer matches this side of a rule. Ports are not considered.
    func matchesPeer(_ peer: Peer) -> Bool {
        if !nets.isEmpty && !nets.contains(where: { $0.contains(peer.cidr) }) { return false }
        if notNets.contains(where: { $0.contains(peer.cidr) }) { return false }
        if let endpoints, !endpoints.matches(peer) { return false }
        if let notSelector, notSelector.matches(peer) { return false }
        if !serviceAccountNames.isEmpty {
            guard let workload = peer.workload, serviceAccountNames.contains(workload.pod.serviceAccount) else { return false }
        }
        return true
    }
}
