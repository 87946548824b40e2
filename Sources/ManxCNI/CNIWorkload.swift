import ManxModel
import ManxSelectors

/// Whom an invocation is for. Kubernetes runtimes pass the pod in CNI_ARGS
/// (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`); any other runtime (podman,
/// containerd's `ctr`, nerdctl) gets a workload of orchestrator `cni`, as
/// Calico's plugin makes for them:
///
/// - namespace `default`; workload (and WorkloadEndpoint name part) the
///   container ID; the endpoint is `NODE-cni-CONTAINERID-IFNAME`;
/// - labels: `manx.io/container-name` with the runtime's container name
///   when it passes one as `K8S_POD_NAME` (podman does) that is a valid
///   label value;
/// - profile: one named after the network (the conflist's `name`), which
///   the plugin creates when it is missing: it gives its containers the
///   label `<network>: ""`, allows ingress from its own containers and all
///   egress. Without a policy that selects them, containers of one network
///   reach each other and nothing else reaches them. An operator may
///   replace the profile (`bpfctl apply`), and policies select containers
///   with `projectcalico.org/orchestrator == 'cni'` and their labels.
struct CNIWorkload: Equatable {
    var orchestrator: Orchestrator
    var namespace: String
    /// The pod's name, or the container ID.
    var name: String
    var labels: [String: String] = [:]
    var profiles: [String] = []

    static let namespace = "default"
    static let containerNameLabel = "manx.io/container-name"

    var key: String { "\(namespace)/\(name)" }

    static func of(_ environment: CNIEnvironment, network: String) throws(CNIError) -> CNIWorkload {
        switch (environment.podNamespace, environment.podName) {
        case (let namespace?, let pod?):
            return CNIWorkload(orchestrator: .k8s, namespace: namespace, name: pod)
        case (_?, nil):
            throw CNIError(.invalidEnvironment, "CNI_ARGS has K8S_POD_NAMESPACE but no K8S_POD_NAME (got '\(CNIPlugin.argsText(environment.args))')")
        case (nil, let containerName):
            if let problem = nameProblem(environment.containerID) {
                throw CNIError(.invalidEnvironment, "CNI_CONTAINERID '\(environment.containerID)' names the WorkloadEndpoint of a container without K8S_POD_NAMESPACE, so it must be \(problem)")
            }
            var workload = CNIWorkload(orchestrator: .cni, namespace: namespace, name: environment.containerID, profiles: [network])
            if let containerName, LabelValidation.validateValue(containerName) == nil {
                workload.labels[containerNameLabel] = containerName
            }
            return workload
        }
    }

    /// Why a container ID cannot be part of a WorkloadEndpoint's name (a
    /// DNS-1123 subdomain), or nil.
    static func nameProblem(_ id: String) -> String? {
        let lowercase = id.utf8.allSatisfy { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2d || $0 == 0x2e }
        let labels = id.split(separator: ".", omittingEmptySubsequences: false)
        guard lowercase, id.utf8.count <= 200,
              labels.allSatisfy({ !$0.isEmpty && $0.first != "-" && $0.last != "-" }) else {
            return "at most 200 lowercase letters, digits, '-' and '.', each part between dots starting and ending alphanumeric"
        }
        return nil
    }

    /// The network's profile, as the plugin creates it when it is missing.
    static func profileYAML(network: String) -> String {
        """
        # Made by manx-cni for the containers of CNI network \(network).
        apiVersion: projectcalico.org/v3
        kind: Profile
        metadata:
          name: \(YAMLText.quote(network))
        spec:
          labelsToApply: {\(YAMLText.quote(network)): ""}
          ingress:
          - action: Allow
            source: {selector: \(YAMLText.quote("has(\(network))"))}
          egress:
          - action: Allow

        """
    }
}

extension CNIWorkload {
    /// The profile's documents, validated as the daemon will: a network
    /// whose name cannot name a Profile or a label is refused here, before
    /// anything is written.
    static func validated(profile yaml: String, network: String) throws(CNIError) -> [ResourceDocument] {
        do {
            return try ResourceSet.documents(file: "profile-\(network).yaml", text: yaml)
        } catch {
            throw CNIError(.invalidNetworkConfig, "network name '\(network)' cannot name the Profile of its containers",
                           details: error.errors.map(\.description).joined(separator: "; "))
        }
    }
}
