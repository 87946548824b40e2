// Raw frames for the attack tests: what a pod with CAP_NET_RAW can put on
// its own interface (forged addresses, VLAN tags, tunnel headers), sent
// as-is through an AF_PACKET socket, bypassing the pod's own stack.
import Glibc

/// Sends each frame `count` times on the interface, 10 ms apart; exits 1
/// when the kernel refuses one.
func inject(interface: String, frames: [[UInt8]], count: Int) -> Never {
    let index = if_nametoindex(interface)
    guard index != 0 else { fail("no interface \(interface)") }
    let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), 0) // protocol 0: send only
    guard fd >= 0 else { fail("socket(AF_PACKET): \(String(cString: strerror(errno)))") }
    var address = LinkLayerAddress(family: UInt16(AF_PACKET), ifindex: Int32(index))
    for _ in 0..<count {
        for frame in frames {
            let sent = frame.withUnsafeBytes { bytes in
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<LinkLayerAddress>.size))
                    }
                }
            }
            guard sent == frame.count else { fail("sendto \(interface): \(String(cString: strerror(errno)))") }
        }
        usleep(10_000)
    }
    close(fd)
    print("sent \(count * frames.count) frames on \(interface)")
    exit(0)
}

/// struct sockaddr_ll of <linux/if_packet.h>, which Glibc's module does not
/// export; the fields a sender needs, same layout (20 bytes).
struct LinkLayerAddress {
    var family: UInt16
    var protocolNumber: UInt16 = 0
    var ifindex: Int32
    var hardwareType: UInt16 = 0
    var packetType: UInt8 = 0
    var addressLength: UInt8 = 0
    var address: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0, 0, 0, 0)
}

/// Hex digits, two per byte, no separators.
func parseHexFrame(_ text: String) -> [UInt8]? {
    let digits = Array(text.utf8)
    guard digits.count >= 28, digits.count % 2 == 0 else { return nil }
    var bytes: [UInt8] = []
    for i in stride(from: 0, to: digits.count, by: 2) {
        guard let b = UInt8(String(decoding: digits[i...i + 1], as: UTF8.self), radix: 16) else { return nil }
        bytes.append(b)
    }
    return bytes
}

private func fail(_ message: String) -> Never {
    eprint("manx-probe inject: \(message)")
    exit(1)
}

/// Opens `flows` distinct UDP flows to the address as fast as it can: one
/// datagram per (source port, destination port) pair, from as many sockets
/// as it takes. For the conntrack-exhaustion attack test.
func flood(_ ip: in_addr_t, flows: Int) -> Never {
    let started = nowMs()
    var sent = 0
    var payload: UInt8 = 0
    while sent < flows {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { die("socket") }
        var port: UInt16 = 1
        while sent < flows {
            let n = withSockaddr(ip, port) { sendto(fd, &payload, 1, 0, $0, $1) }
            // A full socket buffer or a drop by policy is the attack's business, not ours.
            if n < 0 && errno != ENOBUFS && errno != EAGAIN && errno != EPERM && errno != ECONNREFUSED { die("sendto") }
            sent += 1
            if port == 65535 { break }
            port += 1
        }
        close(fd)
    }
    print("sent \(sent) flows in \(nowMs() - started) ms")
    exit(0)
}
