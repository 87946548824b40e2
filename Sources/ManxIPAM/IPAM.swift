import Foundation
import ManxDatastore
import ManxModel

/// IP address management on the directory datastore, after Calico IPAM:
/// pools are cut into blocks, a node claims blocks and hands out their
/// addresses. Every block is one file, `ipam-<block name>.yaml`, holding a
/// manx.io/v1 IPAMBlock with its allocations.
///
/// assign and release run under an exclusive flock(2) on
/// `<datastore>/.ipam.lock` and re-read the blocks from disk inside it, so
/// CNI invocations in parallel, in any process on any node sharing the
/// directory, never hand out one address twice. See IPAMState for the
/// allocation rules.
public struct IPAM: Sendable {
    public let datastore: DirectoryDatastore

    public init(datastore: DirectoryDatastore) { self.datastore = datastore }

    /// The kinds IPAM reads; other documents (policies, pods...) are
    /// skipped, so an error in them does not stop pods from getting
    /// addresses.
    public static let kinds: Set<String> = ["IPPool", "Node", "IPAMBlock"]

    /// The datastore file of a block.
    public static func fileName(_ block: CIDR) -> String { "ipam-\(IPAMBlock.resourceName(block)).yaml" }

    var lock: IPAMLock { IPAMLock(path: URL(fileURLWithPath: datastore.directory).appendingPathComponent(".ipam.lock").path) }

    /// An address for the request. Idempotent: a handle that already holds
    /// an address gets it again.
    public func assign(_ r: IPAMRequest) throws(IPAMError) -> IPAMAssignment {
        try lock.withLock(exclusive: true) { () throws(IPAMError) -> IPAMAssignment in
            var state = try load()
            let (assignment, changed) = try state.assign(r)
            if let changed { try write(changed) }
            return assignment
        }
    }

    /// Frees every address the handle holds and returns them. Idempotent:
    /// an unknown handle frees nothing.
    @discardableResult
    public func release(handle: String) throws(IPAMError) -> [IPv4Address] {
        try lock.withLock(exclusive: true) { () throws(IPAMError) -> [IPv4Address] in
            var state = try load()
            let (released, changed) = state.release(handle: handle)
            for block in changed { try write(block) }
            return released
        }
    }

    /// What the handle holds.
    public func assignments(handle: String) throws(IPAMError) -> [IPAMAssignment] {
        try lock.withLock(exclusive: false) { () throws(IPAMError) -> [IPAMAssignment] in
            try load().assignments(handle: handle)
        }
    }

    func load() throws(IPAMError) -> IPAMState {
        let files: [(name: String, text: String)]
        do {
            files = try datastore.files()
        } catch {
            throw IPAMError(.datastore, "cannot read the datastore \(datastore.directory): \(error)")
        }
        do {
            return IPAMState(try ResourceSet.decode(files: files, kinds: Self.kinds))
        } catch {
            throw IPAMError(.datastore, "invalid IPAM resources in the datastore:\n\(error)")
        }
    }

    func write(_ block: IPAMBlock) throws(IPAMError) {
        let name = Self.fileName(block.cidr)
        guard block.ref.file == name else {
            // Rewriting another file could drop its other documents, and a
            // second file would duplicate the block.
            throw IPAMError(.datastore, "IPAMBlock \(block.ref.name) is stored in \(block.ref.file); IPAM keeps each block in \(name) and will not change it there")
        }
        do {
            try datastore.write(name, block.yaml)
        } catch {
            throw IPAMError(.datastore, "cannot write \(name) in \(datastore.directory): \(error)")
        }
    }
}
