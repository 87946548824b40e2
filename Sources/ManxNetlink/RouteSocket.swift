import CNetlink
import Glibc

/// A refused or failed rtnetlink request: what was asked, and the errno.
public struct NetlinkError: Error, CustomStringConvertible, Sendable {
    public var code: Int32
    public var operation: String

    public init(_ code: Int32, _ operation: String) {
        self.code = code
        self.operation = operation
    }

    public var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// An interface as rtnetlink reports it.
public struct Link: Sendable, Equatable {
    public var name: String
    public var index: Int32
    /// "aa:bb:cc:dd:ee:ff"
    public var mac: String
    public var mtu: Int
    public var alias: String?
    /// Administratively up (IFF_UP).
    public var up: Bool
}

/// An IPv4 route of the main table.
public struct Route: Sendable, Equatable {
    /// "a.b.c.d"; 0.0.0.0 with prefix 0 is the default route.
    public var destination: String
    public var prefix: Int
    public var gateway: String?
    /// The output interface's index, 0 if none.
    public var interface: Int32
}

/// An rtnetlink socket in one network namespace: the few link, address
/// and route operations a pod's veth needs, each one request answered by
/// the kernel's acknowledgement (no `ip` process: each cost ~4 ms).
///
/// A socket belongs to the namespace it was opened in, so a socket for a
/// pod's namespace is opened there (this thread enters it and returns)
/// and then serves requests from anywhere.
public final class RouteSocket {
    private let fd: Int32
    private var sequence: UInt32 = 0

    /// A socket in the namespace at `path` (a `/var/run/netns/…` or
    /// `/proc/<pid>/ns/net` path), or in this thread's own with nil.
    public init(namespace path: String? = nil) throws(NetlinkError) {
        guard let path else {
            fd = try Self.open()
            return
        }
        let target = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard target >= 0 else { throw NetlinkError(errno, "opening the network namespace \(path)") }
        defer { close(target) }
        let home = Glibc.open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard home >= 0 else { throw NetlinkError(errno, "opening this thread's network namespace") }
        defer { close(home) }
        guard setns(target, manx_clone_newnet) == 0 else { throw NetlinkError(errno, "entering the network namespace \(path)") }
        let opened = Result { () throws(NetlinkError) in try Self.open() }
        // Staying in the pod's namespace would run every later operation
        // of this thread there: no way to go on.
        guard setns(home, manx_clone_newnet) == 0 else {
            fatalError("cannot return to this thread's network namespace after \(path): \(String(cString: strerror(errno)))")
        }
        fd = try opened.get()
    }

    deinit { close(fd) }

    private static func open() throws(NetlinkError) -> Int32 {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), NETLINK_ROUTE)
        guard fd >= 0 else { throw NetlinkError(errno, "opening an rtnetlink socket") }
        return fd
    }

    // MARK: Links

    /// The interface of that name, or nil if there is none.
    public func link(named name: String) throws(NetlinkError) -> Link? {
        var m = Message(type: RTM_GETLINK, flags: 0)
        m.append(ifinfomsg())
        m.attribute(IFLA_IFNAME, string: name)
        do throws(NetlinkError) {
            return try request(m, "reading interface \(name)").first.flatMap(Self.parseLink)
        } catch where error.code == ENODEV {
            return nil
        }
    }

    /// A veth pair: `name` here, `peer` in the namespace at `peerNamespace`.
    public func createVeth(name: String, peer: String, peerNamespace: String, mtu: Int) throws(NetlinkError) {
        let operation = "creating the veth \(name) with peer \(peer) in \(peerNamespace)"
        let ns = Glibc.open(peerNamespace, O_RDONLY | O_CLOEXEC)
        guard ns >= 0 else { throw NetlinkError(errno, "\(operation): opening \(peerNamespace)") }
        defer { close(ns) }
        var m = Message(type: RTM_NEWLINK, flags: NLM_F_CREATE | NLM_F_EXCL)
        m.append(ifinfomsg())
        m.attribute(IFLA_IFNAME, string: name)
        m.attribute(IFLA_MTU, UInt32(mtu))
        m.nested(IFLA_LINKINFO) { info in
            info.attribute(IFLA_INFO_KIND, string: "veth")
            info.nested(IFLA_INFO_DATA) { data in
                data.nested(VETH_INFO_PEER) { p in
                    p.append(ifinfomsg())
                    p.attribute(IFLA_IFNAME, string: peer)
                    p.attribute(IFLA_MTU, UInt32(mtu))
                    p.attribute(IFLA_NET_NS_FD, UInt32(ns))
                }
            }
        }
        try request(m, operation)
    }

    /// Sets the interface's alias (`ip link set … alias`).
    public func setAlias(_ link: Link, _ alias: String) throws(NetlinkError) {
        var m = Message(type: RTM_NEWLINK, flags: 0)
        m.append(Self.info(link.index))
        m.attribute(IFLA_IFALIAS, string: alias)
        try request(m, "setting the alias of \(link.name)")
    }

    /// Brings the interface up (`ip link set … up`).
    public func setUp(_ link: Link) throws(NetlinkError) {
        var m = Message(type: RTM_NEWLINK, flags: 0)
        m.append(Self.info(link.index, flags: UInt32(IFF_UP), change: UInt32(IFF_UP)))
        try request(m, "bringing \(link.name) up")
    }

    /// Deletes the interface (a veth's peer goes with it); false if there
    /// was none.
    @discardableResult
    public func deleteLink(named name: String) throws(NetlinkError) -> Bool {
        var m = Message(type: RTM_DELLINK, flags: 0)
        m.append(ifinfomsg())
        m.attribute(IFLA_IFNAME, string: name)
        do throws(NetlinkError) {
            try request(m, "deleting interface \(name)")
            return true
        } catch where error.code == ENODEV {
            return false
        }
    }

    private static func info(_ index: Int32, flags: UInt32 = 0, change: UInt32 = 0) -> ifinfomsg {
        var i = ifinfomsg()
        i.ifi_index = index
        i.ifi_flags = flags
        i.ifi_change = change
        return i
    }

    // MARK: Addresses

    /// Adds an IPv4 address (`ip addr add a.b.c.d/prefix dev …`).
    public func addAddress(_ address: String, prefix: Int, to link: Link) throws(NetlinkError) {
        let operation = "adding \(address)/\(prefix) to \(link.name)"
        let bytes = try Self.ipv4(address, operation)
        var m = Message(type: RTM_NEWADDR, flags: NLM_F_CREATE | NLM_F_EXCL)
        var a = ifaddrmsg()
        a.ifa_family = UInt8(AF_INET)
        a.ifa_prefixlen = UInt8(prefix)
        a.ifa_index = UInt32(link.index)
        m.append(a)
        m.attribute(IFA_LOCAL, bytes)
        m.attribute(IFA_ADDRESS, bytes)
        try request(m, operation)
    }

    /// The interface's IPv4 addresses as "a.b.c.d/prefix".
    public func addresses(of link: Link) throws(NetlinkError) -> [String] {
        var m = Message(type: RTM_GETADDR, flags: NLM_F_DUMP)
        var a = ifaddrmsg()
        a.ifa_family = UInt8(AF_INET)
        m.append(a)
        return try request(m, "reading the addresses of \(link.name)", dump: true).compactMap { reply in
            let header: ifaddrmsg = reply.load()
            guard Int32(header.ifa_index) == link.index else { return nil }
            let attributes = reply.attributes(after: MemoryLayout<ifaddrmsg>.size)
            guard let local = attributes[UInt16(IFA_LOCAL)] ?? attributes[UInt16(IFA_ADDRESS)] else { return nil }
            return "\(Self.dotted(local))/\(header.ifa_prefixlen)"
        }
    }

    // MARK: Routes

    /// Adds (or with `replace`, sets) a route of the main table through
    /// the interface, via `gateway` if given; without one it is a link
    /// route, as `ip route` makes it.
    public func addRoute(_ destination: String, prefix: Int, gateway: String? = nil, dev link: Link,
                         replace: Bool = false) throws(NetlinkError) {
        let operation = "\(replace ? "setting" : "adding") the route \(destination)/\(prefix)\(gateway.map { " via \($0)" } ?? "") dev \(link.name)"
        var m = Message(type: RTM_NEWROUTE, flags: NLM_F_CREATE | (replace ? NLM_F_REPLACE : NLM_F_EXCL))
        var r = rtmsg()
        r.rtm_family = UInt8(AF_INET)
        r.rtm_dst_len = UInt8(prefix)
        r.rtm_table = UInt8(RT_TABLE_MAIN.rawValue)
        r.rtm_protocol = UInt8(RTPROT_BOOT)
        r.rtm_scope = UInt8(gateway == nil ? RT_SCOPE_LINK.rawValue : RT_SCOPE_UNIVERSE.rawValue)
        r.rtm_type = UInt8(RTN_UNICAST)
        m.append(r)
        if prefix > 0 { m.attribute(RTA_DST.rawValue, try Self.ipv4(destination, operation)) }
        if let gateway { m.attribute(RTA_GATEWAY.rawValue, try Self.ipv4(gateway, operation)) }
        m.attribute(RTA_OIF.rawValue, UInt32(link.index))
        try request(m, operation)
    }

    /// The IPv4 unicast routes of the main table.
    public func routes() throws(NetlinkError) -> [Route] {
        var m = Message(type: RTM_GETROUTE, flags: NLM_F_DUMP)
        var r = rtmsg()
        r.rtm_family = UInt8(AF_INET)
        m.append(r)
        return try request(m, "reading the routes", dump: true).compactMap { reply in
            let header: rtmsg = reply.load()
            let attributes = reply.attributes(after: MemoryLayout<rtmsg>.size)
            let table = attributes[UInt16(RTA_TABLE.rawValue)].map { UInt32($0.load() as UInt32) } ?? UInt32(header.rtm_table)
            guard table == RT_TABLE_MAIN.rawValue, header.rtm_type == RTN_UNICAST else { return nil }
            return Route(destination: attributes[UInt16(RTA_DST.rawValue)].map(Self.dotted) ?? "0.0.0.0",
                         prefix: Int(header.rtm_dst_len),
                         gateway: attributes[UInt16(RTA_GATEWAY.rawValue)].map(Self.dotted),
                         interface: attributes[UInt16(RTA_OIF.rawValue)].map { $0.load() as Int32 } ?? 0)
        }
    }

    // MARK: Requests

    /// Sends one request and collects its replies: until the
    /// acknowledgement, or for a dump until its end. A negative
    /// acknowledgement throws its errno.
    @discardableResult
    private func request(_ message: Message, _ operation: String, dump: Bool = false) throws(NetlinkError) -> [Reply] {
        sequence &+= 1
        var bytes = message.bytes
        let flags = UInt16(NLM_F_REQUEST) | UInt16(dump ? 0 : NLM_F_ACK) | message.flags
        bytes.store(UInt32(bytes.count), at: 0)
        bytes.store(flags, at: 6)
        bytes.store(sequence, at: 8)
        let sent = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == bytes.count else { throw NetlinkError(sent < 0 ? errno : EIO, operation) }
        var replies: [Reply] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw NetlinkError(n < 0 ? errno : EIO, "\(operation): reading the answer") }
            var offset = 0
            while offset + 16 <= n {
                let length = Int(buffer.load(at: offset) as UInt32)
                let type = buffer.load(at: offset + 4) as UInt16
                let seq = buffer.load(at: offset + 8) as UInt32
                guard length >= 16, offset + length <= n else { throw NetlinkError(EPROTO, "\(operation): a malformed answer") }
                defer { offset += (length + 3) & ~3 }
                guard seq == sequence else { continue } // an answer to an earlier request
                switch Int32(type) {
                case NLMSG_ERROR:
                    let code = buffer.load(at: offset + 16) as Int32
                    if code != 0 { throw NetlinkError(-code, operation) }
                    return replies
                case NLMSG_DONE:
                    return replies
                default:
                    replies.append(Reply(bytes: buffer[(offset + 16)..<(offset + length)]))
                }
            }
        }
    }

    // MARK: Encoding

    private static func parseLink(_ reply: Reply) -> Link? {
        let header: ifinfomsg = reply.load()
        let attributes = reply.attributes(after: MemoryLayout<ifinfomsg>.size)
        guard let name = attributes[UInt16(IFLA_IFNAME)].map(string) else { return nil }
        let mac = attributes[UInt16(IFLA_ADDRESS)].map { $0.map { String($0, radix: 16).leftPadded(2) }.joined(separator: ":") } ?? ""
        return Link(name: name, index: header.ifi_index, mac: mac,
                    mtu: attributes[UInt16(IFLA_MTU)].map { Int($0.load() as UInt32) } ?? 0,
                    alias: attributes[UInt16(IFLA_IFALIAS)].map(string),
                    up: header.ifi_flags & UInt32(IFF_UP) != 0)
    }

    private static func string(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    private static func dotted(_ bytes: ArraySlice<UInt8>) -> String { bytes.prefix(4).map(String.init).joined(separator: ".") }

    private static func ipv4(_ text: String, _ operation: String) throws(NetlinkError) -> [UInt8] {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).compactMap { UInt8($0) }
        guard parts.count == 4 else { throw NetlinkError(EINVAL, "\(operation): \(text) is not an IPv4 address") }
        return parts
    }
}

/// A request under construction: the netlink header (its length, flags
/// and sequence set when sent), a fixed header, attributes.
struct Message {
    var bytes: [UInt8]
    let flags: UInt16

    init(type: some BinaryInteger, flags: some BinaryInteger) {
        bytes = [UInt8](repeating: 0, count: 16)
        self.flags = UInt16(flags)
        bytes.store(UInt16(type), at: 4)
    }

    private init(nestedIn: Void) {
        bytes = []
        flags = 0
    }

    mutating func append<T>(_ value: T) {
        withUnsafeBytes(of: value) { bytes.append(contentsOf: $0) }
        align()
    }

    mutating func attribute(_ type: some BinaryInteger, _ payload: [UInt8]) {
        bytes.append(contentsOf: [0, 0, 0, 0])
        bytes.store(UInt16(4 + payload.count), at: bytes.count - 4)
        bytes.store(UInt16(type), at: bytes.count - 2)
        bytes.append(contentsOf: payload)
        align()
    }

    mutating func attribute(_ type: some BinaryInteger, string: String) { attribute(type, Array(string.utf8) + [0]) }

    mutating func attribute(_ type: some BinaryInteger, _ value: UInt32) { attribute(type, withUnsafeBytes(of: value) { Array($0) }) }

    mutating func nested(_ type: some BinaryInteger, _ body: (inout Message) -> Void) {
        var inner = Message(nestedIn: ())
        body(&inner)
        attribute(UInt16(type) | UInt16(NLA_F_NESTED), inner.bytes)
    }

    private mutating func align() { while bytes.count % 4 != 0 { bytes.append(0) } }
}

/// One reply's payload: its fixed header, then attributes.
struct Reply {
    var bytes: ArraySlice<UInt8>

    /// The fixed header.
    func load<T: BitwiseCopyable>() -> T { bytes.load() }

    /// The attributes after a fixed header of `size` bytes, by type.
    func attributes(after size: Int) -> [UInt16: ArraySlice<UInt8>] {
        var result: [UInt16: ArraySlice<UInt8>] = [:]
        var offset = bytes.startIndex + ((size + 3) & ~3)
        while offset + 4 <= bytes.endIndex {
            let length = Int(bytes[offset...].load() as UInt16)
            let type = (bytes[(offset + 2)...].load() as UInt16) & ~UInt16(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
            guard length >= 4, offset + length <= bytes.endIndex else { break }
            result[type] = bytes[(offset + 4)..<(offset + length)]
            offset += (length + 3) & ~3
        }
        return result
    }
}

extension ArraySlice<UInt8> {
    /// A value read at the start of the slice (zero-filled when short).
    func load<T: BitwiseCopyable>() -> T {
        var padded = Array(self.prefix(MemoryLayout<T>.size))
        if padded.count < MemoryLayout<T>.size { padded += [UInt8](repeating: 0, count: MemoryLayout<T>.size - padded.count) }
        return padded.withUnsafeBytes { $0.loadUnaligned(as: T.self) }
    }
}

extension [UInt8] {
    func load<T: BitwiseCopyable>(at offset: Int) -> T {
        withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }

    mutating func store<T: BitwiseCopyable>(_ value: T, at offset: Int) {
        withUnsafeMutableBytes { $0.storeBytes(of: value, toByteOffset: offset, as: T.self) }
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String { String(repeating: "0", count: Swift.max(0, width - count)) + self }
}
