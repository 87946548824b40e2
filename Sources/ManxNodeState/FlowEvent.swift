import Foundation

/// A flow event from the kernel (a denied flow, or an allowed one that a
/// Log rule or the endpoint asked to see), with names resolved.
public struct FlowEvent: Codable, Sendable {
    public var timestamp: Date
    public var interface: String
    public var direction: String
    public var verdict: String
    public var reason: String
    public var proto: String
    public var source: String
    public var destination: String
    public var peerIdentity: UInt32
    public var peer: String
    public var ruleID: UInt32
    public var rule: String

    public init(timestamp: Date, interface: String, direction: String, verdict: String, reason: String, proto: String, source: String, destination: String, peerIdentity: UInt32, peer: String, ruleID: UInt32, rule: String) {
        self.timestamp = timestamp
        self.interface = interface
        self.direction = direction
        self.verdict = verdict
        self.reason = reason
        self.proto = proto
        self.source = source
        self.destination = destination
        self.peerIdentity = peerIdentity
        self.peer = peer
        self.ruleID = ruleID
        self.rule = rule
    }

    public var line: String {
        "\(ISO8601DateFormatter().string(from: timestamp)) \(verdict.uppercased()) \(direction) \(interface) \(proto) \(source) -> \(destination) peer=\(peer) (\(reason); \(rule))"
    }
}
