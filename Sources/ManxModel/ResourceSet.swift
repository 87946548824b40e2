import CBytes
import Foundation
import Glibc
import Synchronization
import Yams

/// Everything the datastore holds, decoded and validated as one batch.
public struct ResourceSet: Sendable, Equatable {
    public var namespaces: [String: Namespace] = [:]
    /// Keyed "namespace/name".
    public var pods: [String: Pod] = [:]
    /// Writing them drops their stamps (the stamps would no longer say which is which).
    public var policies: [Policy] = [] { didSet { policyStamps = PolicyStamps() } }
    /// Set by `ResourceCache`: one per policy, the same for the same decoded policy.
    public var policyStamps = PolicyStamps()
    /// Keyed by name; always holds the built-in "default" tier.
    public var tiers: [String: Tier] = ["default": .defaultTier]
    public var networkSets: [NetworkSet] = []
    public var profiles: [String: Profile] = [:]
    /// Pod networking, keyed by name.
    public var ipPools: [String: IPPool] = [:]
    public var nodes: [String: ClusterNode] = [:]
    public var felixConfigurations: [String: FelixConfiguration] = [:]
    public var ipamBlocks: [CIDR: IPAMBlock] = [:]
    /// Keyed "namespace/name". Their pods are in `pods` too, with the
    /// endpoint's address, node and interface.
    public var workloadEndpoints: [String: WorkloadEndpoint] = [:]

    public init() {}

    /// Decodes every document of every file. Any error anywhere rejects the
    /// whole batch, with every error found.
    public static func decode(files: [(name: String, text: String)]) throws(ValidationErrors) -> ResourceSet {
        try decode(files: files, kinds: nil)
    }

    /// Decodes only the documents of the given kinds (e.g. ["IPPool",
    /// "Node", "IPAMBlock"] for IPAM), so an error in an unrelated resource
    /// does not stop a reader that does not need it. A document whose text
    /// does not name one of the kinds is not even parsed (so invalid YAML
    /// there goes unreported); the others are, then kept by their kind.
    /// nil: every kind.
    public static func decode(files: [(name: String, text: String)], kinds: Set<String>?,
                              mentioning groups: [[String]]? = nil) throws(ValidationErrors) -> ResourceSet {
        try assemble(files.map { decodeFile(name: $0.name, text: $0.text, kinds: kinds, mentioning: groups) })
    }

    /// The documents of one file, decoded on their own: what a reader that
    /// decodes only changed files keeps per file.
    public struct DecodedFile: Sendable {
        public let name: String
        let resources: [Resource]
        public let errors: [ValidationError]
        /// What each decoded resource is, in order (a keyed datastore checks
        /// them against the key that holds them).
        public let headers: [ResourceHeader]
        /// Documents decoded (for measurement).
        public var count: Int { resources.count }
        /// Its policies, in document order.
        public var policies: [Policy] { resources.compactMap { if case .policy(let p) = $0 { p } else { nil } } }
        /// Whether it holds only policies and no errors.
        public var onlyPolicies: Bool { errors.isEmpty && resources.allSatisfy { if case .policy = $0 { true } else { false } } }

        init(name: String, resources: [Resource], errors: [ValidationError], headers: [ResourceHeader] = []) {
            self.name = name
            self.resources = resources
            self.errors = errors
            self.headers = headers
        }

        /// The same without its policies: what an assemble given the
        /// policies apart reads (a file of 10k policies and a few pods,
        /// walked on every change, was a third of an assemble).
        public var withoutPolicies: DecodedFile {
            DecodedFile(name: name, resources: resources.filter { if case .policy = $0 { false } else { true } }, errors: errors, headers: headers)
        }

        /// The same documents with more errors (found by whoever holds the file).
        public func adding(_ more: [ValidationError]) -> DecodedFile {
            more.isEmpty ? self : DecodedFile(name: name, resources: resources, errors: errors + more, headers: headers)
        }
    }

    /// With `kinds`, only documents of those kinds are decoded, and only
    /// those whose text names one (or, with `mentioning`, holds every word
    /// of one of its groups) are parsed: a pod's read in a directory that
    /// also holds 10k policies parsed all of them (0.4 s for each CNI ADD).
    public static func decodeFile(name: String, text: String, kinds: Set<String>? = nil,
                                  mentioning groups: [[String]]? = nil) -> DecodedFile {
        if kinds == nil, let decoded = decodeInPieces(name: name, text: text) { return decoded }
        return decodeWhole(name: name, text: text, kinds: kinds, mentioning: groups)
    }

    static func decodeWhole(name: String, text: String, kinds: Set<String>?, mentioning groups: [[String]]?) -> DecodedFile {
        let documents: [Node]
        do {
            if let kinds {
                documents = try parseDocuments(Self.documents(of: text, mentioning: groups ?? kinds.map { [$0] }))
            } else {
                documents = try parseDocuments(text)
            }
        } catch {
            return DecodedFile(name: name, resources: [], errors: [ValidationError(file: name, resource: "", field: "", reason: "invalid YAML: \(error)")])
        }
        var resources: [Resource] = []
        var errors: [ValidationError] = []
        var headers: [ResourceHeader] = []
        for (index, doc) in documents.enumerated() {
            func top(_ field: String) -> String? { doc.mapping?.first(where: { $0.key.scalar?.string == field })?.value.scalar?.string }
            if let kinds {
                guard let kind = top("kind"), kinds.contains(kind) else { continue }
            }
            let ctx = DecodeContext(file: name, resource: "document \(index + 1)")
            let resource = ResourceDecoder.decode(YNode(node: doc, path: "", ctx: ctx), file: name)
            errors += ctx.errors
            if ctx.errors.isEmpty, let resource {
                resources.append(resource)
                let ref = resource.ref
                headers.append(ResourceHeader(apiVersion: top("apiVersion") ?? "", kind: top("kind") ?? ref.kind,
                                              namespace: ref.namespace, name: ref.name))
            }
        }
        return DecodedFile(name: name, resources: resources, errors: errors, headers: headers)
    }

    /// A file this large is decoded in pieces, one per CPU.
    static let piecewiseBytes = 256 << 10

    /// A large file's documents decoded in contiguous pieces, one per CPU
    /// (one file of 10k policies took manxd 0.7 s on one core). Nil when
    /// the file is small, holds a directive (`%`, which applies to the
    /// documents after it), or any piece has an error: then the caller
    /// decodes it whole, so every error reads as it always does (a
    /// piece's line numbers and document numbers would be its own).
    static func decodeInPieces(name: String, text: String) -> DecodedFile? {
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        guard cpus > 1, text.utf8.count >= piecewiseBytes, !text.hasPrefix("%"), !mentions(text, ["\n%"]) else { return nil }
        let documents = documentTexts(text)
        guard documents.count > 1 else { return nil }
        // Pieces of about equal size, each a stream of whole documents.
        var pieces: [String] = [], piece: [UInt8] = []
        let target = text.utf8.count / min(cpus, documents.count) + 1
        for document in documents {
            piece += document
            if piece.count >= target { pieces.append(String(decoding: piece, as: UTF8.self)); piece = [] }
        }
        if !piece.isEmpty { pieces.append(String(decoding: piece, as: UTF8.self)) }
        let texts = pieces
        let decoded = Mutex<[DecodedFile?]>(Array(repeating: nil, count: pieces.count))
        DispatchQueue.concurrentPerform(iterations: texts.count) { i in
            let part = decodeWhole(name: name, text: texts[i], kinds: nil, mentioning: nil)
            decoded.withLock { $0[i] = part }
        }
        let parts = decoded.withLock { $0 }.compactMap { $0 }
        guard parts.allSatisfy(\.errors.isEmpty) else { return nil }
        return DecodedFile(name: name, resources: parts.flatMap(\.resources), errors: [], headers: parts.flatMap(\.headers))
    }

    /// Puts decoded files together and checks what spans files (duplicate
    /// names, tiers, networking). Any error anywhere rejects the whole
    /// batch, with every error found.
    public static func assemble(_ files: [DecodedFile]) throws(ValidationErrors) -> ResourceSet {
        try assemble(files, policies: nil)
    }

    /// The same, with the policies already put together by the caller (in
    /// `policyOrder`, without duplicate names); the files' own policies are
    /// then skipped. A reader that keeps its policies up to date change by
    /// change does not sort them all again.
    /// `policyTiers`: the tiers the given policies name, when the caller
    /// keeps them (then a batch whose tiers all exist is not walked policy
    /// by policy: at 10k policies that walk was most of an assemble).
    public static func assemble(_ files: [DecodedFile], policies: [Policy]?, stamps: PolicyStamps = PolicyStamps(),
                                policyTiers: Set<String>? = nil) throws(ValidationErrors) -> ResourceSet {
        var set = ResourceSet()
        var errors: [ValidationError] = []
        var seen: [String: ResourceRef] = [:]
        if let policies {
            set.policies = policies
            set.policyStamps = stamps
        }
        for file in files {
            errors += file.errors
            for resource in file.resources {
                if policies != nil, case .policy = resource { continue }
                let ref = resource.ref
                // Policies by their Calico name, so a Kubernetes and a Calico
                // NetworkPolicy of the same name can coexist, as in Calico.
                var identity = "\(ref.kind)/\(ref.namespace ?? "")/\(ref.name)"
                if case .policy(let p) = resource { identity = "Policy/\(p.namespace ?? "")/\(p.name)" }
                if let first = seen[identity] {
                    errors.append(ValidationError(file: file.name, resource: ref.description, field: "metadata.name",
                                                  reason: "duplicate: already defined in \(first.file)"))
                    continue
                }
                seen[identity] = ref
                set.add(resource)
            }
        }
        // Cross-resource checks: every policy's tier must exist (most
        // policies name the tier the one before them named).
        if !(policyTiers?.allSatisfy { set.tiers[$0] != nil } ?? false) {
            var lastTier: String?
            for i in set.policies.indices where set.policies[i].tier != lastTier {
                let p = set.policies[i]
                if set.tiers[p.tier] == nil {
                    errors.append(ValidationError(file: p.ref.file, resource: p.ref.description, field: "spec.tier",
                                                  reason: "tier '\(p.tier)' does not exist"))
                } else {
                    lastTier = p.tier
                }
            }
        }
        errors += set.checkNetworking()
        if !errors.isEmpty { throw ValidationErrors(errors) }
        set.mergeWorkloadEndpoints()
        if policies == nil { set.policies = inPolicyOrder(set.policies) }
        set.networkSets.sort { $0.ref < $1.ref }
        return set
    }

    /// The order of `policies`: by reference, then by file.
    public static func policyOrder(_ a: Policy, _ b: Policy) -> Bool {
        a.ref < b.ref || (!(b.ref < a.ref) && a.ref.file < b.ref.file)
    }

    /// `policies` in `policyOrder`. Their places are sorted, not the
    /// policies: a sort moves each element some log n times, and a policy
    /// is a large value (sorting 10k of them in place was a third of
    /// loading their keys).
    public static func inPolicyOrder(_ policies: [Policy]) -> [Policy] {
        let refs = policies.map(\.ref)
        return refs.indices.sorted { a, b in
            refs[a] < refs[b] || (!(refs[b] < refs[a]) && refs[a].file < refs[b].file)
        }.map { policies[$0] }
    }

    /// Parses a multi-document stream completely before anything is used:
    /// a syntax error in a later document must reject the whole file.
    /// The text of each document of a YAML stream: a line that starts
    /// with `---` and a space, a tab or its end begins the next one (YAML
    /// allows no such line inside a document).
    static func documentTexts(_ text: String) -> [ArraySlice<UInt8>] {
        let bytes = Array(text.utf8)
        let marker = Array("\n---".utf8)
        var pieces: [ArraySlice<UInt8>] = []
        var start = 0, from = 0
        while let newline = find(marker, in: bytes[from...]) {
            if isMarker(bytes, newline + 1) {
                pieces.append(bytes[start..<(newline + 1)])
                start = newline + 1
            }
            from = newline + 1
        }
        if start < bytes.count { pieces.append(bytes[start...]) }
        return pieces
    }

    /// The documents of `text` that hold, for one of `groups`, every word of
    /// it, in order, as one stream (each but the file's first begins with
    /// its `---`), for one parser. Each group's first word is searched for
    /// in the whole text and only the documents around its hits are looked
    /// at: splitting a file of 10k policies into documents, and searching
    /// each, was most of a pod's read from it.
    static func documents(of text: String, mentioning groups: [[String]]) -> String {
        let bytes = Array(text.utf8)
        var kept: [Range<Int>] = []
        for group in groups.map({ $0.map { Array($0.utf8) } }) {
            guard let first = group.first else { continue }
            var from = 0
            while from < bytes.count, let hit = find(first, in: bytes[from...]) {
                let document = document(around: hit, in: bytes)
                if group.dropFirst().allSatisfy({ find($0, in: bytes[document]) != nil }) { kept.append(document) }
                from = document.upperBound
            }
        }
        var seen = Set<Int>()
        let ordered = kept.sorted { $0.lowerBound < $1.lowerBound }.filter { seen.insert($0.lowerBound).inserted }
        return String(decoding: ordered.map { bytes[$0] }.joined(), as: UTF8.self)
    }

    /// The document (as `documentTexts` splits) that holds byte `at`: from
    /// the last `---` line at or before it to the next one after it.
    static func document(around at: Int, in bytes: [UInt8]) -> Range<Int> {
        var start = at
        while start > 0 && !(bytes[start - 1] == UInt8(ascii: "\n") && isMarker(bytes, start)) { start -= 1 }
        let marker = Array("\n---".utf8)
        var from = at
        while let newline = find(marker, in: bytes[from...]) {
            if isMarker(bytes, newline + 1) { return start..<(newline + 1) }
            from = newline + 1
        }
        return start..<bytes.count
    }

    /// Whether a `---` line starts at `line`: three dashes, then a space, a
    /// tab, a line end or the end of the text.
    static func isMarker(_ bytes: [UInt8], _ line: Int) -> Bool {
        guard line + 3 <= bytes.count, bytes[line..<line + 3].elementsEqual("---".utf8) else { return false }
        return line + 3 == bytes.count || [UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r")].contains(bytes[line + 3])
    }

    /// Whether the text holds one of the words, bytes compared (String's
    /// `contains` compares characters: 50 ms for a file of 10k policies).
    public static func mentions(_ text: String, _ words: Set<String>) -> Bool {
        let words = words.map { Array($0.utf8) }
        // In place when the string is contiguous UTF-8 (a file read whole is).
        func inBytes(_ b: UnsafeRawBufferPointer) -> Bool { words.contains { find($0, in: b) != nil } }
        return text.utf8.withContiguousStorageIfAvailable { inBytes(UnsafeRawBufferPointer($0)) }
            ?? Array(text.utf8).withUnsafeBytes(inBytes)
    }

    /// Where `word` first starts in `bytes` (glibc's memmem: the document
    /// marker starts with a newline, so a search by its first byte stopped
    /// at every line of a file), as an index of `bytes`.
    static func find(_ word: [UInt8], in bytes: ArraySlice<UInt8>) -> Int? {
        bytes.withUnsafeBytes { find(word, in: $0) }.map { bytes.startIndex + $0 }
    }

    /// The same in raw bytes: an offset from their start.
    static func find(_ word: [UInt8], in b: UnsafeRawBufferPointer) -> Int? {
        guard !word.isEmpty, b.count >= word.count else { return nil }
        return word.withUnsafeBytes { w in
            memmem(b.baseAddress!, b.count, w.baseAddress!, w.count).map { UnsafeRawPointer($0) - b.baseAddress! }
        }
    }

    static func parseDocuments(_ text: String) throws -> [Node] {
        // A keyed datastore's value: one JSON object, read without libyaml.
        if let node = JSONNodes.parse(text) { return [node] }
        // No implicit tag resolution: the decoder reads every scalar's text
        // and style itself, and resolving (regular expressions per scalar,
        // again for each mapping key's duplicate check) was most of the
        // decoding time.
        // The encoding is given: Yams' default reads the whole process
        // environment for each parser, which was a tenth of decoding.
        let parser = try Parser(yaml: text, resolver: .basic, encoding: .utf8)
        var nodes: [Node] = []
        while let node = try parser.nextRoot() {
            // An empty document (`---` alone, or only comments) is skipped.
            if case .scalar(let s) = node, s.string.isEmpty { continue }
            nodes.append(node)
        }
        return nodes
    }

    mutating func add(_ resource: Resource) {
        switch resource {
        case .namespace(let ns): namespaces[ns.name] = ns
        case .pod(let pod): pods[pod.key] = pod
        case .policy(let p): policies.append(p)
        case .tier(let t): tiers[t.name] = t
        case .networkSet(let n): networkSets.append(n)
        case .profile(let p): profiles[p.name] = p
        case .ipPool(let p): ipPools[p.name] = p
        case .node(let n): nodes[n.name] = n
        case .felixConfiguration(let f): felixConfigurations[f.name] = f
        case .ipamBlock(let b): ipamBlocks[b.cidr] = b
        case .workloadEndpoint(let w): workloadEndpoints["\(w.namespace)/\(w.name)"] = w
        }
    }
}

/// What a decoded document is: its type and name (namespace defaulted).
public struct ResourceHeader: Hashable, Sendable, CustomStringConvertible {
    public var apiVersion: String
    public var kind: String
    public var namespace: String?
    public var name: String
    public var description: String { "\(kind) \(namespace.map { "\($0)/" } ?? "")\(name)" }
}

/// One decoded document.
enum Resource: Sendable {
    case namespace(Namespace)
    case pod(Pod)
    case policy(Policy)
    case tier(Tier)
    case networkSet(NetworkSet)
    case profile(Profile)
    case ipPool(IPPool)
    case node(ClusterNode)
    case felixConfiguration(FelixConfiguration)
    case ipamBlock(IPAMBlock)
    case workloadEndpoint(WorkloadEndpoint)

    var ref: ResourceRef {
        switch self {
        case .namespace(let n): return n.ref
        case .pod(let p): return p.ref
        case .policy(let p): return p.ref
        case .tier(let t): return t.ref
        case .networkSet(let n): return n.ref
        case .profile(let p): return p.ref
        case .ipPool(let p): return p.ref
        case .node(let n): return n.ref
        case .felixConfiguration(let f): return f.ref
        case .ipamBlock(let b): return b.ref
        case .workloadEndpoint(let w): return w.ref
        }
    }
}

/// Tells policies apart between two sets assembled by one `ResourceCache`:
/// equal stamps, the same decoded policy, so the compiler need not compare
/// them. Not content: sets with equal resources are equal whatever their stamps.
public struct PolicyStamps: Sendable, Equatable {
    public var values: [UInt64]
    public init(_ values: [UInt64] = []) { self.values = values }
    public static func == (_: PolicyStamps, _: PolicyStamps) -> Bool { true }
}
