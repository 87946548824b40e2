/// An IPv4 address as a host-order integer.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses dotted quad notation strictly: four decimal octets, no leading zeros.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy(\.isASCII), p.allSatisfy(\.isNumber),
                  !(p.count > 1 && p.first == "0"), let octet = UInt32(p), octet <= 255 else { return nil }
            v = v << 8 | octet
        }
        value = v
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
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2 else { return .failure(ParseFailure("'\(text)' is not a CIDR (more than one '/')")) }
        guard let address = IPv4Address(parts[0]) else {
            if parts[0].contains(":") { return .failure(ParseFailure("'\(text)' is IPv6; only IPv4 is supported")) }
            return .failure(ParseFailure("'\(text)' is not a CIDR: '\(parts[0])' is not an IPv4 address"))
        }
        var length = 32
        if parts.count == 2 {
            guard let n = Int(parts[1]), parts[1].allSatisfy(\.isNumber), (0...32).contains(n) else {
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
