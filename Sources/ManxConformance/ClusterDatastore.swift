import Foundation
import ManxDataplane
import ManxDatastore
import ManxModel
import ManxNodeState

/// Where a simulated cluster or node keeps its resources, written a named
/// file at a time: a directory datastore (the file itself), or etcd (the
/// file's resources, each under its key, written with `bpfctl` from the
/// namespace of an etcd member; resources a new version of the file no
/// longer holds are deleted). Either way the last text of each file is
/// kept in `directory`.
public final class ClusterDatastore: @unchecked Sendable {
    public let directory: String
    /// The etcd members, when etcd is the datastore.
    public let members: [EtcdMember]
    let bpfctl: String

    public init(directory: String, members: [EtcdMember] = [], binDirectory: String) {
        self.directory = directory
        self.members = members
        bpfctl = binDirectory + "/bpfctl"
    }

    var isEtcd: Bool { !members.isEmpty }
    var local: DirectoryDatastore { DirectoryDatastore(directory: directory) }
    public var endpoints: String { members.map(\.clientURL).joined(separator: ",") }

    public var description: String { isEtcd ? "etcd \(endpoints)" : directory }

    /// What manxd is told.
    public var daemonArguments: [String] { isEtcd ? ["--etcd-endpoints", endpoints] : ["--datastore", directory] }

    /// The datastore fields of manx-cni's network configuration.
    public var cniFields: String {
        isEtcd ? #""datastore_type": "etcdv3", "etcd_endpoints": "\#(endpoints)""# : #""datastore": "\#(directory)""#
    }

    public func write(_ name: String, _ text: String) throws {
        guard isEtcd else { return try local.write(name, text) }
        let old = (try? String(contentsOfFile: "\(directory)/\(name)", encoding: .utf8)).flatMap { try? ResourceSet.documents(file: name, text: $0) } ?? []
        let new = try ResourceSet.documents(file: name, text: text)
        try local.write(name, text)
        try bpfctl("apply", "\(directory)/\(name)")
        let gone = old.filter { o in !new.contains { $0.header == o.header } }
        if !gone.isEmpty { try delete(gone, name) }
    }

    public func remove(_ name: String) throws {
        guard isEtcd else { return try local.remove(name) }
        guard let text = try? String(contentsOfFile: "\(directory)/\(name)", encoding: .utf8) else { return }
        try delete(try ResourceSet.documents(file: name, text: text), name)
        try local.remove(name)
    }

    /// Deletes resources, named by a scratch file of their JSON (JSON is YAML).
    private func delete(_ documents: [ResourceDocument], _ name: String) throws {
        let scratch = "\(directory)/.\(name).delete"
        try documents.map(\.json).joined(separator: "\n---\n").write(toFile: scratch, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try bpfctl("delete", scratch)
    }

    /// The member commands go through: a running one, if any.
    private var via: EtcdMember { members.first { $0.isRunning } ?? members[0] }

    private func bpfctl(_ command: String, _ file: String) throws {
        // In parts: benches load 10k policies through here.
        try Shell.run((via.netns.map { ["ip", "netns", "exec", $0] } ?? []) + [bpfctl, command, "-f", file, "--etcd-endpoints", endpoints, "--in-parts"])
    }

    /// What a node must have applied to hold the current content.
    public enum Target: Sendable, Equatable {
        case digest(String)
        case revision(Int64)
    }

    public func target() throws -> Target {
        guard isEtcd else { return .digest(try local.snapshot().digest) }
        return .revision(try via.revision())
    }

    public enum Outcome: Sendable, Equatable {
        case applied
        case rejected(String)
    }

    /// Whether a node's published state shows the target applied (with
    /// every interface found) or rejected; nil: not yet.
    public static func outcome(_ meta: NodeMetadata, _ target: Target) -> Outcome? {
        switch target {
        case .digest(let digest):
            if meta.rejectedDigest == digest { return .rejected(meta.error ?? "rejected") }
            return meta.appliedDigest == digest && meta.missingInterfaces.isEmpty ? .applied : nil
        case .revision(let revision):
            let applied = meta.appliedRevision ?? 0, rejected = meta.rejectedRevision ?? 0
            if rejected >= revision && rejected > applied { return .rejected(meta.error ?? "rejected") }
            return applied >= revision && meta.missingInterfaces.isEmpty && meta.datastoreError == nil ? .applied : nil
        }
    }
}
