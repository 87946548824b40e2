import ManxModel

/// The ADD result: the host and pod interfaces, the /32 and the default
/// route via the link-local gateway.
public struct CNIResult: Sendable, Equatable {
    public var cniVersion: String
    public var hostInterface: String
    public var hostMAC: String
    public var podInterface: String
    public var podMAC: String
    public var sandbox: String
    public var address: IPv4Address

    init(cniVersion: String, host: LinkInfo, pod: LinkInfo, sandbox: String, address: IPv4Address) {
        self.cniVersion = cniVersion
        hostInterface = host.name
        hostMAC = host.mac
        podInterface = pod.name
        podMAC = pod.mac
        self.sandbox = sandbox
        self.address = address
    }

    public var value: JSONValue {
        var ip: [String: JSONValue] = [
            "address": .string("\(address)/32"), "gateway": .string(PodInterface.gateway), "interface": .int(1),
        ]
        // Before 1.0.0 every IP names its version.
        if !CNIVersion.atLeast(cniVersion, "1.0.0") { ip["version"] = .string("4") }
        return .object([
            "cniVersion": .string(cniVersion),
            "interfaces": .array([
                .object(["name": .string(hostInterface), "mac": .string(hostMAC)]),
                .object(["name": .string(podInterface), "mac": .string(podMAC), "sandbox": .string(sandbox)]),
            ]),
            "ips": .array([.object(ip)]),
            "routes": .array([.object(["dst": .string("0.0.0.0/0"), "gw": .string(PodInterface.gateway)])]),
            "dns": .object([:]),
        ])
    }

    public var json: String { value.text }
}
