// Just enough SCTP (RFC 9260) to emulate the INIT / INIT-ACK handshake over
// raw IPv4 sockets: the test kernel has no sctp module, so the probe sends an
// INIT and the server answers with an INIT-ACK itself.
import Glibc

let sctpProtocol: Int32 = 132
let chunkInit: UInt8 = 1
let chunkInitAck: UInt8 = 2
let chunkAbort: UInt8 = 6

/// CRC32c (Castagnoli) lookup table for the reflected polynomial 0x82F63B78.
let crc32cTable: [UInt32] = (0..<256).map { i in
    var c = UInt32(i)
    for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
    return c
}

/// CRC32c as SCTP uses it (RFC 9260 Appendix A): init ~0, final complement.
func crc32c(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for b in bytes { crc = crc32cTable[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
    return ~crc
}

func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
func read16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
func read32(_ b: [UInt8], _ i: Int) -> UInt32 { UInt32(read16(b, i)) << 16 | UInt32(read16(b, i + 2)) }

/// Checksum of a whole SCTP packet with its checksum field treated as zero.
/// The reflected CRC goes on the wire least-significant byte first (like
/// Linux's cpu_to_le32), so it is compared/stored little-endian.
func sctpChecksum(_ packet: [UInt8]) -> UInt32 {
    var p = packet
    p.replaceSubrange(8..<12, with: [0, 0, 0, 0])
    return crc32c(p)
}

/// SCTP common header + one chunk, with a correct checksum.
func sctpPacket(srcPort: UInt16, dstPort: UInt16, vtag: UInt32, chunk: [UInt8]) -> [UInt8] {
    var p = be16(srcPort)
    p += be16(dstPort)
    p += be32(vtag)
    p += [0, 0, 0, 0]
    p += chunk
    let crc = sctpChecksum(p)
    p.replaceSubrange(8..<12, with: be32(crc.byteSwapped))  // little-endian on the wire
    return p
}

/// INIT and INIT-ACK share the same fixed fields: initiate tag, a_rwnd,
/// outbound/inbound stream counts and initial TSN, then optional parameters.
func initChunk(type: UInt8, initiateTag: UInt32, params: [UInt8] = []) -> [UInt8] {
    var body = be32(initiateTag)
    body += be32(65_535)            // advertised receiver window
    body += be16(1) + be16(1)       // one stream each way
    body += be32(UInt32.random(in: 1...UInt32.max))  // initial TSN
    body += params
    return [type, 0] + be16(UInt16(4 + body.count)) + body
}

/// The fields of a received SCTP packet that the emulation cares about.
struct SCTPPacket {
    let srcIP: ArraySlice<UInt8>, dstIP: ArraySlice<UInt8>
    let srcPort: UInt16, dstPort: UInt16, vtag: UInt32
    let chunkType: UInt8
    let initiateTag: UInt32?  // present only for INIT / INIT-ACK
}

/// Parses what a raw IPv4 socket returns (IP header included). Rejects anything
/// that is not well-formed SCTP with a valid checksum, as a real stack would.
func parseSCTP(_ ip: [UInt8]) -> SCTPPacket? {
    guard ip.count >= 20, ip[0] >> 4 == 4, ip[9] == UInt8(sctpProtocol) else { return nil }
    let ihl = Int(ip[0] & 0x0F) * 4
    guard ihl >= 20, ip.count >= ihl + 16 else { return nil }  // common header + chunk header
    let s = Array(ip[ihl...])
    guard sctpChecksum(s) == read32(s, 8).byteSwapped else { return nil }
    let type = s[12]
    let hasTag = (type == chunkInit || type == chunkInitAck) && s.count >= 12 + 20
    return SCTPPacket(srcIP: ip[12..<16], dstIP: ip[16..<20],
                      srcPort: read16(s, 0), dstPort: read16(s, 2), vtag: read32(s, 4),
                      chunkType: type, initiateTag: hasTag ? read32(s, 16) : nil)
}
