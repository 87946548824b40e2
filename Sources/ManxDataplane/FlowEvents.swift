import Foundation
import ManxBPF
import ManxCompiler
import ManxMapLayout
import ManxModel
import ManxNodeState

extension FlowEvent {
    static func decode(_ bytes: [UInt8], bootOffset: TimeInterval, meta: NodeMetadata) -> FlowEvent? {
        guard bytes.count >= MemoryLayout<manx_flow_event>.size else { return nil }
        let e = bytes.withUnsafeBytes { $0.loadUnaligned(as: manx_flow_event.self) }
        let proto = IPProtocol(e.proto)
        let ports = proto.hasPorts
        func endpoint(_ addr: UInt32, _ port: UInt16) -> String {
            let ip = IPv4Address(UInt32(bigEndian: addr)).description
            return ports ? "\(ip):\(UInt16(bigEndian: port))" : ip
        }
        let rule = meta.rules[e.rule_id].map { "\($0.policy)\($0.index.map { " rule \($0)" } ?? ""): \($0.summary)" } ?? "rule \(e.rule_id)"
        return FlowEvent(
            timestamp: Date(timeIntervalSince1970: bootOffset + Double(e.timestamp_ns) / 1e9),
            interface: NetworkInterface.name(index: Int32(bitPattern: e.ifindex)) ?? "ifindex \(e.ifindex)",
            direction: e.direction == UInt8(MANX_DIR_INGRESS.rawValue) ? "ingress" : "egress",
            verdict: e.verdict == UInt8(MANX_VERDICT_ALLOW.rawValue) ? "allow" : "deny",
            reason: DumpReport.counterNames[Int(min(e.reason, UInt8(DumpReport.counterNames.count - 1)))],
            proto: proto.description, source: endpoint(e.saddr, e.sport), destination: endpoint(e.daddr, e.dport),
            peerIdentity: e.peer_identity,
            peer: e.peer_identity == ReservedIdentity.world ? "world" : (meta.identities[e.peer_identity]?.members.joined(separator: ", ") ?? "identity \(e.peer_identity)"),
            ruleID: e.rule_id, rule: rule)
    }
}

/// Streams flow events of a running node from its pinned ring buffer.
public final class FlowEventReader {
    private let ring: BPFRingBuffer
    private let paths: NodePaths
    private let bootOffset: TimeInterval

    public init(_ paths: NodePaths) throws {
        self.paths = paths
        ring = try BPFRingBuffer(try BPFMap.openPinned("\(paths.pinRoot)/\(MANX_MAP_EVENTS)"))
        bootOffset = Date().timeIntervalSince1970 - Double(monotonicNanoseconds()) / 1e9
    }

    public func next(timeoutMs: Int32) throws -> [FlowEvent] {
        let records = try ring.poll(timeoutMs: timeoutMs)
        if records.isEmpty { return [] }
        let meta = (try? NodeMetadata.read(paths)) ?? NodeMetadata()
        return records.compactMap { FlowEvent.decode($0, bootOffset: bootOffset, meta: meta) }
    }
}
