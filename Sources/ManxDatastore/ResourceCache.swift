import Dispatch
import ManxModel
import Synchronization

/// The datastore's content as the daemon holds it: every key's decoded
/// documents, kept up to date by the datastore's updates. Only keys whose
/// text changed are decoded again, and the policies (most of a large
/// datastore) are kept in order change by change, not sorted again.
public final class ResourceCache {
    /// Checks a key's decoded documents against the key (a keyed datastore
    /// holds one resource under its own key).
    public typealias KeyCheck = @Sendable (String, ResourceSet.DecodedFile) -> [ValidationError]

    private let check: KeyCheck?
    private var entries: [String: Entry] = [:]
    /// The revision of the last update applied.
    public private(set) var revision: Int64 = 0
    /// Every policy, in `ResourceSet.policyOrder`, and its stamp.
    private var policies: [Policy] = []
    private var stamps: [UInt64] = []
    /// Stamps are unique in the process, so sets from two caches never share one.
    private static let nextStamp = Atomic<UInt64>(1)
    /// How many policies hold each qualified name (more than one: the
    /// batch is invalid, and a full assemble says where).
    private var policyNames: [String: Int] = [:]
    /// How many policies name each tier.
    private var policyTiers: [String: Int] = [:]
    private var duplicatePolicies = 0
    /// Keys with anything but policies (or with errors): what assemble reads.
    private var otherKeys = Set<String>()
    /// The content digest, a sum over keys, kept as keys change.
    private var digestSum: UInt64 = 0

    struct Entry: Sendable {
        var digest: UInt64
        var decoded: ResourceSet.DecodedFile
        /// `decoded` without its policies (the cache keeps those in order).
        var others: ResourceSet.DecodedFile
    }

    public init(check: KeyCheck? = nil) { self.check = check }

    /// Applies an update; returns how many keys were decoded.
    @discardableResult
    public func apply(_ update: DatastoreUpdate) -> Int {
        switch update {
        case .snapshot(let all, let revision):
            for key in Array(entries.keys) where all[key] == nil { set(key, nil) }
            let stale = all.compactMap { key, text in
                let digest = DirectoryDatastore.fileDigest(text)
                return entries[key]?.digest == digest ? nil : (key, text, digest)
            }
            let decoded = decodeConcurrently(stale)
            if decoded.count > max(64, policies.count / 8) {
                // Many keys (the first listing): the policies are sorted
                // once, not inserted one by one (10k insertions took 150 ms,
                // moving half the array each).
                for (key, entry) in decoded { set(key, entry, keepingOrder: false) }
                rebuildOrder()
            } else {
                for (key, entry) in decoded { set(key, entry) }
            }
            self.revision = revision
            return stale.count
        case .changes(let changes, let revision):
            for (key, text) in changes {
                set(key, text.map { decode(key, $0, DirectoryDatastore.fileDigest($0)) })
            }
            self.revision = revision
            return changes.values.count { $0 != nil }
        case .unreachable:
            return 0
        }
    }

    private func decode(_ key: String, _ text: String, _ digest: UInt64) -> Entry {
        Self.decode(key, text, digest, check: check)
    }

    private static func decode(_ key: String, _ text: String, _ digest: UInt64, check: KeyCheck?) -> Entry {
        let file = ResourceSet.decodeFile(name: key, text: text)
        let decoded = file.adding(check?(key, file) ?? [])
        return Entry(digest: digest, decoded: decoded, others: decoded.withoutPolicies)
    }

    /// Decodes keys on every CPU (a snapshot of a large datastore is
    /// thousands of keys, each decoded on its own), in chunks of keys.
    private func decodeConcurrently(_ keys: [(String, String, UInt64)]) -> [(String, Entry)] {
        let chunk = 64
        let chunks = (keys.count + chunk - 1) / chunk
        guard chunks > 1 else { return keys.map { ($0.0, decode($0.0, $0.1, $0.2)) } }
        let results = Mutex<[[(String, Entry)]]>(Array(repeating: [], count: chunks))
        let check = self.check
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let part = keys[c * chunk..<min(keys.count, (c + 1) * chunk)].map { ($0.0, Self.decode($0.0, $0.1, $0.2, check: check)) }
            results.withLock { $0[c] = part }
        }
        return results.withLock { $0.flatMap { $0 } }
    }

    /// Replaces a key's entry, keeping the policy order, the other keys and
    /// the digest up to date.
    /// Without `keepingOrder` the policies are left for `rebuildOrder`.
    private func set(_ key: String, _ entry: Entry?, keepingOrder: Bool = true) {
        if let old = entries[key] {
            digestSum &-= DirectoryDatastore.entryDigest(key, old.digest)
            if keepingOrder { for p in old.decoded.policies { removePolicy(p) } }
        }
        entries[key] = entry
        guard let entry else {
            otherKeys.remove(key)
            return
        }
        digestSum &+= DirectoryDatastore.entryDigest(key, entry.digest)
        if keepingOrder { for p in entry.decoded.policies { insertPolicy(p) } }
        if entry.decoded.onlyPolicies { otherKeys.remove(key) } else { otherKeys.insert(key) }
    }

    /// Every key's policies sorted again, each with a new stamp (the
    /// compiler then compares each with its place in the last compile).
    private func rebuildOrder() {
        // Ties (one policy in two keys) are rejected by the full assemble.
        policies = ResourceSet.inPolicyOrder(entries.values.flatMap { $0.decoded.policies })
        let first = Self.nextStamp.add(UInt64(policies.count), ordering: .relaxed).oldValue
        stamps = (0..<UInt64(policies.count)).map { first + $0 }
        policyNames = [:]
        policyTiers = [:]
        duplicatePolicies = 0
        for p in policies { countName(p) }
    }

    /// The first index whose policy does not sort before `p`.
    private func lowerBound(_ p: Policy) -> Int {
        var lo = 0, hi = policies.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ResourceSet.policyOrder(policies[mid], p) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    private func insertPolicy(_ p: Policy) {
        let at = lowerBound(p)
        policies.insert(p, at: at)
        stamps.insert(Self.nextStamp.add(1, ordering: .relaxed).oldValue, at: at)
        countName(p)
    }

    private func countName(_ p: Policy) {
        policyTiers[p.tier, default: 0] += 1
        let count = policyNames[p.qualifiedName, default: 0] + 1
        policyNames[p.qualifiedName] = count
        if count == 2 { duplicatePolicies += 1 }
    }

    private func removePolicy(_ p: Policy) {
        var i = lowerBound(p)
        while i < policies.count, policies[i] != p { i += 1 }
        if i < policies.count {
            policies.remove(at: i)
            stamps.remove(at: i)
        }
        policyTiers[p.tier, default: 1] -= 1
        if policyTiers[p.tier] == 0 { policyTiers[p.tier] = nil }
        let count = policyNames[p.qualifiedName, default: 1] - 1
        policyNames[p.qualifiedName] = count == 0 ? nil : count
        if count == 1 { duplicatePolicies -= 1 }
    }

    public var count: Int { entries.count }

    /// A digest of every key and its content: equal digests, equal content
    /// (for a directory, the same as `DirectoryDatastore.snapshot().digest`).
    public var digest: String { DirectoryDatastore.digest(sum: digestSum) }

    /// Everything, validated as one batch.
    public func assemble() throws(ValidationErrors) -> ResourceSet {
        if duplicatePolicies > 0 {
            // The full path reports each duplicate where it is.
            return try ResourceSet.assemble(entries.sorted { $0.key < $1.key }.map(\.value.decoded))
        }
        return try ResourceSet.assemble(otherKeys.sorted().map { entries[$0]!.others }, policies: policies, stamps: PolicyStamps(stamps),
                                      policyTiers: Set(policyTiers.keys))
    }
}
