import ManxModel

/// Where IPAM keeps its blocks: a directory (under a flock) or etcd (with
/// compare-and-swap transactions). Both decide with IPAMState.
public protocol IPAMStore: Sendable {
    /// An address for the request. Idempotent: a handle that already holds
    /// an address gets it again.
    func assign(_ r: IPAMRequest) throws(IPAMError) -> IPAMAssignment
    /// Frees every address the handle holds and returns them. Idempotent.
    @discardableResult
    func release(handle: String) throws(IPAMError) -> [IPv4Address]
    /// What the handle holds.
    func assignments(handle: String) throws(IPAMError) -> [IPAMAssignment]
}

extension IPAM: IPAMStore {}
