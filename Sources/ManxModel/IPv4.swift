import Glibc

/// An IPv4 address as a host-order integer.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses dotted quad notation strictly: four decimal octets, no leading zeros.
    public init?(_ text: some StringProtocol) {
        guard let v = Self.parse(text.utf8) else { return nil }
        value = v
    }

    /// The dotted quad in `bytes`, on the bytes (a Character walk was a
    /// tenth of decoding policies whose rules name nets).
    static func parse(_ bytes: some Collection<UInt8>) -> UInt32? {
        var v: UInt32 = 0, octet: UInt32 = 0, digits = 0, dots = 0
        for c in bytes {
            if c == UInt8(ascii: ".") {
                guard digits > 0, dots < 3 else { return nil }
                v = v << 8 | octet
                (octet, digits, dots) = (0, 0, dots + 1)
            } else if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) {
                // No leading zeros, at most three digits.
                guard !(digits == 1 && octet == 0), digits < 3 else { return nil }
                octet = octet * 10 + UInt32(c - UInt8(ascii: "0"))
                digits += 1
                guard octet <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard dots == 3, digits > 0 else { return nil }
        return v << 8 | octet
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xff).\(value >> 8 & 0xff).\(value & 0xff)"
    }

    /// Network byte order, as the kernel and packets carry it.
    public var networkOrder: UInt32 { value.bigEndian }

    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }
}

/// An IPv4 prefix. Host bits are cleared on parse, as Kubernetes and Calico do.
public struct CIDR: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var prefixLength: Int

    public init(_ address: IPv4Address, _ prefixLength: Int) {
        precondition((0...32).contains(prefixLength))
        self.address = IPv4Address(address.value & CIDR.mask(prefixLength))
        self.prefixLength = prefixLength
    }

    /// "a.b.c.d/n", or a bare address meaning /32. Returns the reason on failure.
    public static func parse(_ text: String) -> Result<CIDR, ParseFailure> {
        let utf8 = text.utf8
        let slash = utf8.firstIndex(of: UInt8(ascii: "/"))
        guard let address = IPv4Address.parse(utf8[..<(slash ?? utf8.endIndex)]).map(IPv4Address.init) else {
            let part = text[..<(slash ?? text.endIndex)]
            if part.contains(":") { return .failure(ParseFailure("'\(text)' is IPv6; only IPv4 is supported")) }
            if text[(slash ?? text.endIndex)...].dropFirst().contains("/") {
                return .failure(ParseFailure("'\(text)' is not a CIDR (more than one '/')"))
            }
            return .failure(ParseFailure("'\(text)' is not a CIDR: '\(part)' is not an IPv4 address"))
        }
        var length = 32
        if let slash {
            let digits = utf8[utf8.index(after: slash)...]
            if digits.contains(UInt8(ascii: "/")) { return .failure(ParseFailure("'\(text)' is not a CIDR (more than one '/')")) }
            guard (1...2).contains(digits.count), digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                  case let n = digits.reduce(0, { $0 * 10 + Int($1 - UInt8(ascii: "0")) }), n <= 32 else {
                return .failure(ParseFailure("'\(text)' is not a CIDR: prefix length must be 0-32"))
            }
            length = n
        }
        return .success(CIDR(address, length))
    }

    public struct ParseFailure: Error, Sendable { public let reason: String; init(_ r: String) { reason = r } }

    public static func mask(_ length: Int) -> UInt32 { length == 0 ? 0 : ~UInt32(0) << (32 - length) }

    public func contains(_ ip: IPv4Address) -> Bool { ip.value & CIDR.mask(prefixLength) == address.value }

    public func contains(_ other: CIDR) -> Bool { other.prefixLength >= prefixLength && contains(other.address) }

    public var description: String { "\(address)/\(prefixLength)" }

    public static func < (a: CIDR, b: CIDR) -> Bool {
        (a.address.value, a.prefixLength) < (b.address.value, b.prefixLength)
    }

    public static let any = CIDR(IPv4Address(0), 0)
}

/// An IPv6 prefix, as policies may name one. Manx carries no IPv6 traffic
/// (it is dropped), so these are only validated, and tell which rules and
/// peers are for IPv6 and so never match an IPv4 packet.
public struct IPv6Prefix: Hashable, Sendable {
    public let bytes: [UInt8]
    public let length: Int

    /// "addr/n" or a bare address (/128), in any form inet_pton reads; nil
    /// when it is not IPv6.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts[0].contains(":") else { return nil }
        var address = in6_addr()
        guard inet_pton(AF_INET6, String(parts[0]), &address) == 1 else { return nil }
        var length = 128
        if parts.count == 2 {
            guard (1...3).contains(parts[1].count), parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(parts[1]), n <= 128 else {
                return nil
            }
            length = n
        }
        var bytes = withUnsafeBytes(of: address) { Array($0) }
        // Host bits cleared, as for IPv4.
        for i in 0..<16 {
            let keep = max(0, min(8, length - i * 8))
            bytes[i] &= keep == 8 ? 0xff : UInt8(truncatingIfNeeded: 0xff << (8 - keep))
        }
        self.bytes = bytes
        self.length = length
    }

    public func contains(_ other: IPv6Prefix) -> Bool {
        guard other.length >= length else { return false }
        for i in 0..<16 {
            let keep = max(0, min(8, length - i * 8))
            let mask: UInt8 = keep == 8 ? 0xff : UInt8(truncatingIfNeeded: 0xff << (8 - keep))
            if bytes[i] & mask != other.bytes[i] & mask { return false }
        }
        return true
    }
}
