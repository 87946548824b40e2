import Foundation

/// A CNI error result: printed as JSON on stdout, with a non-zero exit.
/// Codes 1-99 are the CNI specification's; 100 and up are manx-cni's.
public struct CNIError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: Int, Sendable, CaseIterable {
        /// The configuration's cniVersion is not supported.
        case incompatibleVersion = 1
        /// The container (its network namespace) does not exist.
        case containerUnknown = 3
        /// A CNI_* environment variable is missing or invalid.
        case invalidEnvironment = 4
        /// stdin could not be read.
        case ioFailure = 5
        /// The configuration is not valid JSON (or not an object).
        case decodingFailure = 6
        /// The configuration is valid JSON but a field is missing or wrong.
        case invalidNetworkConfig = 7
        /// Transient: retry later (the daemon did not program policy in time).
        case tryAgainLater = 11
        /// The allowed pools have no free address for the node.
        case ipamExhausted = 100
        /// No such pool, the pool is not usable on the node, or the
        /// requested address is not in an enabled pool.
        case ipamNoPool = 101
        /// The requested fixed address is held by another container.
        case ipamAddressInUse = 102
        /// A pod annotation (ipv4pools, ipAddrs) or the Pod resource is invalid.
        case invalidPodAnnotation = 103
        /// The datastore cannot be read or written, or its IPAM data is invalid.
        case datastore = 104
        /// Creating or configuring the veth, addresses or routes failed.
        case interfaceSetup = 110
        /// CHECK found the container's networking differs from the result.
        case checkMismatch = 111
        /// manxd rejected the datastore, so the pod's policy cannot be applied.
        case policyRejected = 112
    }

    public var code: Code
    public var msg: String
    public var details: String

    public init(_ code: Code, _ msg: String, details: String = "") {
        self.code = code
        self.msg = msg
        self.details = details
    }

    public var description: String { details.isEmpty ? "\(msg) (code \(code.rawValue))" : "\(msg): \(details) (code \(code.rawValue))" }

    /// The error JSON of the specification.
    public func json(cniVersion: String) -> String {
        var object: [String: JSONValue] = ["cniVersion": .string(cniVersion), "code": .int(Int64(code.rawValue)), "msg": .string(msg)]
        if !details.isEmpty { object["details"] = .string(details) }
        return JSONValue.object(object).text
    }
}

