import Foundation
import ManxCommand
import ManxCompiler

/// The iptables+ipset dataplane (`manxd --dataplane iptables`), for
/// comparison with BPF and as a fallback. Changes go in with
/// `ipset restore` (sets swapped in atomically) and one
/// `iptables-restore --noflush` transaction; only manx-* chains and sets,
/// and the jumps from FORWARD and INPUT, are ever touched.
///
/// The compiler's allocations are kept with the rules, as comments in a
/// chain nothing jumps to (`manx-alloc`), written in the same transaction
/// as the chains that use the ids: a restarted daemon reads them back and
/// numbers nothing anew.
public final class IptablesDataplane {
    public enum Backend: String, Sendable, CaseIterable {
        case nft, legacy
        var iptables: String { self == .nft ? "iptables-nft" : "iptables-legacy" }
        var restore: String { self == .nft ? "iptables-nft-restore" : "iptables-legacy-restore" }
        var save: String { self == .nft ? "iptables-nft-save" : "iptables-legacy-save" }
    }

    public let backend: Backend
    /// Run the tools inside this network namespace (tests); nil: where we are.
    let netns: String?
    private var programmedChains = Set<String>()
    private var programmedSets: [String: [String]] = [:]
    /// The allocations the manx-alloc chain holds: what a new compiler recovers.
    public private(set) var allocations = Allocations()
    static let allocationChain = "\(IptablesRenderer.chainPrefix)alloc"

    public init(backend: Backend, netns: String? = nil) throws {
        self.backend = backend
        self.netns = netns
        // Adopt what a previous daemon left, so stale chains and sets are removed.
        let saved = try run([backend.save, "-t", "filter"])
        for line in saved.split(separator: "\n") where line.hasPrefix(":\(IptablesRenderer.chainPrefix)") {
            programmedChains.insert(String(line.dropFirst().split(separator: " ")[0]))
        }
        allocations = Self.parseAllocations(saved)
        let sets = try run(["ipset", "list", "-n"])
        for name in sets.split(separator: "\n") where name.hasPrefix(IptablesRenderer.setPrefix) {
            programmedSets[String(name)] = ["?"] // unknown content: rewritten on first apply
        }
    }

    public struct Report: Sendable {
        public var rules = 0
        public var setsWritten = 0
        public var chainsRemoved = 0
    }

    @discardableResult
    public func apply(_ state: CompiledState) throws -> Report {
        let rendered = IptablesRenderer.render(state)
        var report = Report(rules: rendered.ruleCount)

        // 1. Sets: new ones created, changed ones built aside and swapped in.
        var ipset: [String] = []
        for (name, members) in rendered.sets.sorted(by: { $0.key < $1.key }) where programmedSets[name] != members {
            let tmp = "\(name)-t"
            ipset.append("create \(tmp) hash:net family inet maxelem \(IptablesRenderer.maxSetElements) -exist")
            ipset.append("flush \(tmp)")
            ipset += members.map { "add \(tmp) \($0) -exist" }
            ipset.append("create \(name) hash:net family inet maxelem \(IptablesRenderer.maxSetElements) -exist")
            ipset.append("swap \(tmp) \(name)")
            ipset.append("destroy \(tmp)")
            report.setsWritten += 1
        }
        if !ipset.isEmpty { try run(["ipset", "restore"], input: ipset.joined(separator: "\n") + "\n") }

        // 2. Chains, in one transaction: declare (which flushes) ours, fill
        // them, and delete the ones no longer used.
        let stale = programmedChains.subtracting(rendered.chains.keys).subtracting([Self.allocationChain])
        var chains = rendered.chains
        if state.allocations != allocations || !programmedChains.contains(Self.allocationChain) {
            chains[Self.allocationChain] = Self.allocationRules(state.allocations)
        }
        var restore = ["*filter"]
        for name in chains.keys.sorted() + stale.sorted() { restore.append(":\(name) - [0:0]") }
        for (name, rules) in chains.sorted(by: { $0.key < $1.key }) {
            restore += rules.map { "-A \(name) \($0)" }
        }
        restore += stale.sorted().map { "-X \($0)" }
        restore.append("COMMIT")
        try run([backend.restore, "--noflush"], input: restore.joined(separator: "\n") + "\n")
        report.chainsRemoved = stale.count
        programmedChains = Set(chains.keys).union([Self.allocationChain])
        allocations = state.allocations
        try ensureJump()

        // 3. Sets nothing refers to any more.
        for name in Set(programmedSets.keys).subtracting(rendered.sets.keys) {
            _ = try? run(["ipset", "destroy", name])
        }
        programmedSets = rendered.sets
        return report
    }

    /// One inert rule per allocation: "identity <sha256> <id>", "next rule <id>".
    static func allocationRules(_ a: Allocations) -> [String] {
        let next = a.next.sorted { $0.key < $1.key }.map { "next \($0.key) \($0.value)" }
        let ids = a.ids.sorted { $0.key < $1.key }.map { "\($0.key.kind) \($0.key.digest) \($0.value)" }
        return (next + ids).map { "-m comment --comment \"\($0)\" -j RETURN" }
    }

    static func parseAllocations(_ saved: String) -> Allocations {
        var result = Allocations()
        let kinds = Dictionary(uniqueKeysWithValues: Allocations.Kind.allCases.map { ("\($0)", $0) })
        for line in saved.split(separator: "\n") where line.hasPrefix("-A \(allocationChain) ") {
            guard let open = line.range(of: "--comment \""), let close = line[open.upperBound...].firstIndex(of: "\"") else { continue }
            let words = line[open.upperBound..<close].split(separator: " ")
            guard words.count == 3, let id = UInt32(words[2]) else { continue }
            if words[0] == "next", let kind = kinds[String(words[1])] {
                result.next[kind] = id
            } else if let kind = kinds[String(words[0])], let digest = Digest(hex: words[1]) {
                result.ids[Allocations.Key(kind, digest)] = id
            }
        }
        return result
    }

    /// The rules Manx adds to chains it does not own.
    static let jumps = [["FORWARD", "-j", IptablesRenderer.dispatchChain], ["INPUT", "-j", IptablesRenderer.inputChain]]

    private func ensureJump() throws {
        for jump in Self.jumps where (try? run([backend.iptables, "-C"] + jump)) == nil {
            try run([backend.iptables, "-I"] + jump)
        }
    }

    /// Removes every manx chain, the jumps, and every manx set.
    public func uninstall() throws {
        for jump in Self.jumps { _ = try? run([backend.iptables, "-D"] + jump) }
        if !programmedChains.isEmpty {
            var restore = ["*filter"] + programmedChains.sorted().map { ":\($0) - [0:0]" }
            restore += programmedChains.sorted().map { "-X \($0)" }
            restore.append("COMMIT")
            try run([backend.restore, "--noflush"], input: restore.joined(separator: "\n") + "\n")
        }
        for name in programmedSets.keys { _ = try? run(["ipset", "destroy", name]) }
        programmedChains = []
        programmedSets = [:]
        allocations = Allocations()
    }

    @discardableResult
    func run(_ args: [String], input: String? = nil) throws -> String {
        try Self.execute(args, input: input, netns: netns)
    }

    /// Runs a tool (in `netns` if given); its output, or Command.Failure.
    @discardableResult
    static func execute(_ args: [String], input: String? = nil, netns: String? = nil) throws -> String {
        try Command.checked((netns.map { ["ip", "netns", "exec", $0] } ?? []) + args, input: input)
    }
}
