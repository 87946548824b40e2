import Foundation

/// One endpoint whose policy is in force, as manxd publishes it the moment
/// its state takes effect (the generation flip), before the rest of the
/// pass: a small file per workload that the CNI plugin waits for, as
/// Calico's plugin waits for Felix's endpoint status files. Reading it
/// costs nothing next to the metadata, which holds every rule.
///
/// The interface index is the one the programs were attached to, so a
/// status names exactly one veth: a pod's new veth under an old name does
/// not match it.
public struct EndpointStatus: Codable, Sendable, Equatable {
    public var workload: String
    public var interface: String
    public var ifindex: Int32
    public var ip: String

    public init(workload: String, interface: String, ifindex: Int32, ip: String) {
        self.workload = workload
        self.interface = interface
        self.ifindex = ifindex
        self.ip = ip
    }

    /// "namespace/pod" as one file name: neither part may hold "_" (DNS
    /// labels and subdomains), so the first "_" splits them again.
    public static func fileName(workload: String) -> String { workload.replacingOccurrences(of: "/", with: "_") }

    /// The status of a workload, if its policy is in force.
    public static func read(_ paths: NodePaths, workload: String) -> EndpointStatus? {
        let path = paths.endpointStatusDirectory + "/" + fileName(workload: workload)
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(EndpointStatus.self, from: data)
    }
}

/// Keeps the endpoint status directory equal to the endpoints in force:
/// writes the statuses that are new or changed (each atomically), removes
/// those of endpoints gone. The first publication also removes what an
/// earlier daemon left.
public final class EndpointStatusPublisher {
    private let directory: String
    private var published: [String: EndpointStatus]?
    private let encoder = JSONEncoder()

    public init(paths: NodePaths) {
        directory = paths.endpointStatusDirectory
        encoder.outputFormatting = .sortedKeys
    }

    public func publish(_ statuses: [EndpointStatus]) throws {
        let fm = FileManager.default
        var previous = published ?? [:]
        if published == nil {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for name in try fm.contentsOfDirectory(atPath: directory) { try? fm.removeItem(atPath: directory + "/" + name) }
        }
        var next: [String: EndpointStatus] = [:]
        for status in statuses {
            let name = EndpointStatus.fileName(workload: status.workload)
            next[name] = status
            if previous.removeValue(forKey: name) == status { continue }
            let temporary = directory + "/." + name + ".tmp"
            try encoder.encode(status).write(to: URL(fileURLWithPath: temporary))
            guard rename(temporary, directory + "/" + name) == 0 else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: directory + "/" + name])
            }
        }
        for name in previous.keys { try? fm.removeItem(atPath: directory + "/" + name) }
        published = next
    }

    /// Removes every status (the dataplane is uninstalled).
    public func clear() {
        try? FileManager.default.removeItem(atPath: directory)
        published = nil
    }
}
