import Foundation
import ManxModel

extension IPAM {
    public static let poolsAnnotation = "cni.projectcalico.org/ipv4pools"
    public static let addressesAnnotation = "cni.projectcalico.org/ipAddrs"

    /// cni.projectcalico.org/ipv4pools: a JSON list of pool names or IPv4
    /// pool CIDRs, e.g. `["pool-a"]` or `["10.10.0.0/16"]`.
    public static func parsePoolsAnnotation(_ text: String) throws(IPAMError) -> [String] {
        let items = try jsonStrings(text, annotation: poolsAnnotation, example: #"["pool-a"]"#)
        for item in items {
            if item.isEmpty { throw IPAMError(.invalidRequest, "\(poolsAnnotation): an entry is empty") }
            if item.contains(":") {
                throw IPAMError(.invalidRequest, "\(poolsAnnotation): '\(item)' is IPv6; only IPv4 pools are supported")
            }
            if item.contains("/"), case .failure(let f) = CIDR.parse(item) {
                throw IPAMError(.invalidRequest, "\(poolsAnnotation): \(f.reason)")
            }
        }
        return items
    }

    /// cni.projectcalico.org/ipAddrs: a JSON list holding one IPv4 address,
    /// e.g. `["10.10.0.5"]`. Manx gives a pod one IPv4 address.
    public static func parseAddressesAnnotation(_ text: String) throws(IPAMError) -> [IPv4Address] {
        let items = try jsonStrings(text, annotation: addressesAnnotation, example: #"["10.10.0.5"]"#)
        guard !items.isEmpty else { throw IPAMError(.invalidRequest, "\(addressesAnnotation): the list is empty") }
        var addresses: [IPv4Address] = []
        for item in items {
            if item.contains(":") {
                throw IPAMError(.invalidRequest, "\(addressesAnnotation): '\(item)' is IPv6; only IPv4 is supported")
            }
            guard let address = IPv4Address(item) else {
                throw IPAMError(.invalidRequest, "\(addressesAnnotation): '\(item)' is not an IPv4 address")
            }
            addresses.append(address)
        }
        guard addresses.count == 1 else {
            throw IPAMError(.invalidRequest, "\(addressesAnnotation): only one IPv4 address is supported, got \(addresses.count)")
        }
        return addresses
    }

    static func jsonStrings(_ text: String, annotation: String, example: String) throws(IPAMError) -> [String] {
        let data = Data(text.utf8)
        guard let list = try? JSONDecoder().decode([String].self, from: data) else {
            throw IPAMError(.invalidRequest, "\(annotation) must be a JSON list of strings, e.g. \(example); got '\(text)'")
        }
        return list.map { $0.trimmingCharacters(in: .whitespaces) }
    }
}
