import ArgumentParser

/// The dataplane a node programs, spelled the same in every command
/// (`--dataplane`): the BPF maps, or the comparison iptables rules and
/// ipsets through Debian's default iptables (nft-backed) or iptables-legacy.
public enum DataplaneChoice: String, CaseIterable, Sendable, ExpressibleByArgument {
    case bpf
    case iptables
    case iptablesLegacy = "iptables-legacy"

    /// How manxd is told.
    public var daemonArguments: [String] { ["--dataplane", rawValue] }
}

/// Several dataplanes, comma-separated (`--dataplane bpf,iptables`). A
/// value that is not one of them is refused, never dropped.
public struct DataplaneList: ExpressibleByArgument, Sendable, Equatable {
    public var choices: [DataplaneChoice]

    public init(_ choices: [DataplaneChoice]) { self.choices = choices }

    public init?(argument: String) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false)
        let choices = parts.compactMap { DataplaneChoice(rawValue: String($0)) }
        guard !parts.isEmpty, choices.count == parts.count else { return nil }
        self.choices = choices
    }

    public var defaultValueDescription: String { choices.map(\.rawValue).joined(separator: ",") }

    public static var allValueStrings: [String] { DataplaneChoice.allValueStrings }
}
