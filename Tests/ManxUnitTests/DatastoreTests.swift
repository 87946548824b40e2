@testable import ManxDatastore
import ManxModel
import XCTest

final class DatastoreTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = try makeScratchDirectory("manx-ds")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func testLoadsMultiDocumentFilesAndIgnoresOthers() throws {
        let ds = DirectoryDatastore(directory: dir)
        try ds.write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n")
        try "not yaml: [".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        try "kind: Junk".write(toFile: dir + "/.hidden.yaml", atomically: true, encoding: .utf8)
        let (set, digest) = try ds.load()
        XCTAssertEqual(Set(set.namespaces.keys), ["one", "two"])
        XCTAssertEqual(digest, try ds.snapshot().digest)
    }

    func testAnyBadFileRejectsTheBatch() throws {
        let ds = DirectoryDatastore(directory: dir)
        try ds.write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n")
        try ds.write("b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_Name}\n")
        XCTAssertThrowsError(try ds.load()) { error in
            XCTAssertEqual((error as? ValidationErrors)?.errors.first?.file, "b.yaml")
        }
    }

    /// A CNI DEL removes a pod's file while another plugin or manxd reads
    /// the directory: a file listed and then removed before its read is
    /// gone, not an error (CI once failed an ADD on exactly this).
    func testReadersRideOutFilesRemovedMidRead() throws {
        let ds = DirectoryDatastore(directory: dir)
        for i in 0..<20 { try ds.write("keep-\(i).yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: keep\(i)}\n") }
        let stop = ManagedAtomicFlag()
        let churn = Thread {
            var i = 0
            while !stop.isSet {
                let name = "churn-\(i % 8).yaml"
                try? ds.write(name, "apiVersion: v1\nkind: Namespace\nmetadata: {name: churn\(i % 8)}\n")
                try? FileManager.default.removeItem(atPath: ds.directory + "/" + name)
                i += 1
            }
        }
        churn.start()
        defer { stop.set() }
        let scanner = DirectoryScanner(ds)
        let deadline = Date().addingTimeInterval(1)
        var reads = 0
        while Date() < deadline {
            XCTAssertGreaterThanOrEqual(try ds.files().count, 20)
            XCTAssertNoThrow(try ds.load())
            XCTAssertNoThrow(try scanner.scan())
            reads += 1
        }
        XCTAssertGreaterThan(reads, 10)
    }

    func testDigestChangesWithContent() throws {
        let ds = DirectoryDatastore(directory: dir)
        try ds.write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n")
        let before = try ds.snapshot().digest
        try ds.write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n")
        XCTAssertNotEqual(before, try ds.snapshot().digest)
    }

    func testCacheDecodesOnlyChangedFiles() async throws {
        let ds = DirectoryDatastore(directory: dir)
        for name in ["a", "b", "c"] {
            try ds.write("\(name).yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: \(name)}\n")
        }
        let cache = ResourceCache()
        var updates = ds.updates().makeAsyncIterator()
        func next() async throws -> Int {
            let update = await updates.next()
            return cache.apply(try XCTUnwrap(update))
        }
        var decoded = try await next()
        XCTAssertEqual(decoded, 3, "the snapshot decodes every file")
        XCTAssertEqual(cache.digest, try ds.snapshot().digest)

        try ds.write("b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: bee}\n")
        decoded = try await next()
        XCTAssertEqual(decoded, 1, "one file changed: one decoded")
        XCTAssertEqual(cache.digest, try ds.snapshot().digest)
        XCTAssertEqual(Set(try cache.assemble().namespaces.keys), ["a", "bee", "c"])

        try ds.remove("a.yaml")
        decoded = try await next()
        XCTAssertEqual(decoded, 0)
        XCTAssertEqual(cache.digest, try ds.snapshot().digest)
        XCTAssertEqual(Set(try cache.assemble().namespaces.keys), ["bee", "c"])

        // A duplicate across files is found when the files are put together.
        try ds.write("d.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n")
        _ = try await next()
        XCTAssertThrowsError(try cache.assemble()) { error in
            XCTAssertTrue("\(error)".contains("duplicate: already defined in c.yaml"), "\(error)")
        }
    }

    /// Each event is about one entry, and only that file is read (at once,
    /// not at the next full scan): written
    /// in place, renamed into place from a hidden file (ignored), renamed
    /// away, removed; a file of another suffix changes nothing.
    func testWatchReadsTheFilesItsEventsName() async throws {
        let ds = DirectoryDatastore(directory: dir)
        try ds.write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
        /// The cache, fed by the updates on a task of its own.
        final class Follower: @unchecked Sendable {
            let lock = NSLock()
            let cache = ResourceCache()
            var keys = Set<String>()
            func take(_ update: DatastoreUpdate) {
                lock.withLock {
                    cache.apply(update)
                    if case .changes(let changes, _) = update { keys.formUnion(changes.keys) }
                }
            }
        }
        let follower = Follower()
        let updates = ds.updates()
        let task = Task { for await update in updates { follower.take(update) } }
        defer { task.cancel() }
        /// The keys of the updates until the cache holds these namespaces,
        /// which must be within 1 s (from the events, not the full scan
        /// every 2 s).
        func changedKeys(until namespaces: Set<String>) throws -> Set<String> {
            let deadline = Date().addingTimeInterval(1)
            while follower.lock.withLock({ (try? Set(follower.cache.assemble().namespaces.keys)) != namespaces }) {
                guard Date() < deadline else {
                    XCTFail("not \(namespaces) within 1 s")
                    return []
                }
                usleep(2_000)
            }
            return try follower.lock.withLock {
                XCTAssertEqual(follower.cache.digest, try ds.snapshot().digest)
                defer { follower.keys = [] }
                return follower.keys
            }
        }
        _ = try changedKeys(until: ["a"])
        let namespace = { (name: String) in "apiVersion: v1\nkind: Namespace\nmetadata: {name: \(name)}\n" }
        try namespace("b").write(toFile: "\(dir)/b.yaml", atomically: false, encoding: .utf8)
        XCTAssertEqual(try changedKeys(until: ["a", "b"]), ["b.yaml"])
        try namespace("notes").write(toFile: "\(dir)/notes.txt", atomically: false, encoding: .utf8)
        try namespace("c").write(toFile: "\(dir)/.c.tmp", atomically: false, encoding: .utf8)
        XCTAssertEqual(rename("\(dir)/.c.tmp", "\(dir)/c.yaml"), 0)
        XCTAssertEqual(try changedKeys(until: ["a", "b", "c"]), ["c.yaml"])
        XCTAssertEqual(rename("\(dir)/a.yaml", "\(dir)/a.yaml.old"), 0)
        XCTAssertEqual(try changedKeys(until: ["b", "c"]), ["a.yaml"])
        try ds.remove("b.yaml")
        XCTAssertEqual(try changedKeys(until: ["c"]), ["b.yaml"])
    }

    /// The cache keeps its policies in order change by change; whatever the
    /// changes (policies moved between keys, duplicated, removed, files
    /// with other kinds or errors, snapshots of many keys), it assembles
    /// what a full assemble of every key gives, and digests as the
    /// directory does.
    func testCacheAssemblesAsAFullAssembleUnderChurn() throws {
        var rng = IncrementalCompileTests.Generator(state: 7)
        let cache = ResourceCache()
        var keys: [String: String] = [:]
        func policy(_ name: Int, port: Int, tier: String? = nil) -> String {
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p\(name), namespace: ns\(name % 2)}\nspec: {\(tier.map { "tier: \($0), " } ?? "")selector: all(), ingress: [{action: Allow, protocol: TCP, destination: {ports: [\(port)]}}]}\n"
        }
        for step in 0..<400 {
            let key = "k\(Int.random(in: 0..<12, using: &rng))"
            var text: String?
            // Policies in a tier that comes and goes, too: the cache counts
            // the tiers its policies name, and a missing one must be found.
            switch Int.random(in: 0..<8, using: &rng) {
            case 6: text = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: sec}\nspec: {order: 10}\n"
            case 7: text = policy(6 + Int.random(in: 0..<3, using: &rng), port: 80, tier: "sec")
            case 0: text = nil
            case 1: text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: ns\(Int.random(in: 0..<3, using: &rng))}\n"
            case 2: text = policy(Int.random(in: 0..<6, using: &rng), port: 80) + "---\n" + policy(Int.random(in: 0..<6, using: &rng), port: 81)
            case 3: text = "kind: [broken"
            default: text = policy(Int.random(in: 0..<6, using: &rng), port: Int.random(in: 1..<4, using: &rng))
            }
            keys[key] = text
            if step % 100 == 50 || step % 100 == 99 {
                // A snapshot that adds (or drops) many keys: the cache sorts
                // its policies again rather than inserting them one by one.
                for b in 0..<80 { keys["b\(b)"] = step % 100 == 50 ? policy(b % 9, port: 1 + b % 3) : nil }
                cache.apply(.snapshot(keys, revision: Int64(step)))
            } else {
                cache.apply(.changes([key: text], revision: Int64(step)))
            }
            let files = keys.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            XCTAssertEqual(cache.digest, DirectoryDatastore.digest(files.map { ($0.0, DirectoryDatastore.fileDigest($0.1)) }), "step \(step)")
            let full = Result { () throws(ValidationErrors) in try ResourceSet.decode(files: files) }
            let cached = Result { () throws(ValidationErrors) in try cache.assemble() }
            switch (full, cached) {
            case let (.success(a), .success(b)): XCTAssertEqual(a, b, "step \(step)")
            case let (.failure(a), .failure(b)): XCTAssertEqual(a.errors, b.errors, "step \(step)")
            default: XCTFail("step \(step): \(full) vs \(cached)")
            }
        }
        // A snapshot replaces everything.
        cache.apply(.snapshot(["only": policy(1, port: 9)], revision: 999))
        XCTAssertEqual(try cache.assemble(), try ResourceSet.decode(files: [("only", policy(1, port: 9))]))
    }

    func testCacheFindsAPolicysMissingTier() throws {
        let cache = ResourceCache()
        let tier = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: sec}\nspec: {order: 10}\n"
        func policy(_ name: String, tier: String) -> String {
            "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: \(name)}\nspec: {tier: \(tier), selector: all()}\n"
        }
        func reasons() -> [String] {
            do { _ = try cache.assemble(); return [] } catch { return error.errors.map(\.reason) }
        }
        cache.apply(.snapshot(["a": policy("a", tier: "default"), "t": tier, "b": policy("b", tier: "sec")], revision: 1))
        XCTAssertEqual(reasons(), [])
        cache.apply(.changes(["t": nil], revision: 2))
        XCTAssertEqual(reasons(), ["tier 'sec' does not exist"])
        cache.apply(.changes(["t": tier], revision: 3))
        XCTAssertEqual(reasons(), [])
        cache.apply(.changes(["c": policy("c", tier: "other")], revision: 4))
        XCTAssertEqual(reasons(), ["tier 'other' does not exist"])
        cache.apply(.changes(["c": nil, "t": nil, "b": nil], revision: 5))
        XCTAssertEqual(reasons(), [])
    }

    /// `bpfctl apply` into a directory: all files or none, never content
    /// the daemon would reject, a delete that would strand another
    /// resource refused, a fix for content already wrong let in.
    func testChangeIsWholeAndNeverWritesInvalidContent() async throws {
        let store = DirectoryDatastore(directory: dir)
        func change(_ action: ResourceChange.Action, _ files: [(String, String)]) async throws -> [[String]] {
            try await store.change(try files.map { ResourceChange(action, file: "/some/where/\($0.0)", text: $0.1,
                                                                   documents: try ResourceSet.documents(file: $0.0, text: $0.1)) })
        }
        func names() throws -> [String] { try store.fileNames().sorted() }
        let tier = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: sec}\nspec: {order: 10}\n"
        let policy = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.p}\nspec: {tier: sec, selector: all()}\n"
        do {
            _ = try await change(.apply, [("p.yaml", policy)])
            XCTFail("applied a policy whose tier does not exist")
        } catch {
            XCTAssertTrue("\(error)".contains("tier 'sec' does not exist"), "\(error)")
        }
        XCTAssertEqual(try names(), [])
        let written = try await change(.apply, [("t.yaml", tier), ("p.yaml", policy)])
        XCTAssertEqual(written, [["t.yaml"], ["p.yaml"]])
        do {
            _ = try await change(.delete, [("t.yaml", tier)])
            XCTFail("deleted a tier a policy is in")
        } catch {
            XCTAssertTrue("\(error)".contains("tier 'sec' does not exist"), "\(error)")
        }
        // The same resource from another file: a duplicate, refused.
        do {
            _ = try await change(.apply, [("other.yaml", tier)])
            XCTFail("applied a duplicate")
        } catch {
            XCTAssertTrue("\(error)".contains("duplicate: already defined in"), "\(error)")
        }
        XCTAssertEqual(try names(), ["p.yaml", "t.yaml"])
        // Content already wrong (written around bpfctl): a fix goes in.
        try store.write("broken.yaml", "kind: [")
        _ = try await change(.apply, [("t.yaml", tier.replacingOccurrences(of: "10", with: "20"))])
        let removed = try await change(.delete, [("t.yaml", tier), ("p.yaml", policy)])
        XCTAssertEqual(removed, [["t.yaml"], ["p.yaml"]])
        XCTAssertEqual(try names(), ["broken.yaml"])
    }

    /// Two files that change together in one `bpfctl apply` (a tier and a
    /// policy, say): no reader may see one new and the other old, neither
    /// one that lists and reads files nor the watcher that reads only the
    /// files inotify named.
    func testNoReaderSeesHalfAMultiFileChange() async throws {
        let store = DirectoryDatastore(directory: dir)
        func namespaces(_ version: Int) throws -> [ResourceChange] {
            try ["a.yaml", "b.yaml"].map { file in
                let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: \(file.prefix(1)), labels: {v: '\(version)'}}\n"
                return ResourceChange(.apply, file: file, text: text, documents: try ResourceSet.documents(file: file, text: text))
            }
        }
        _ = try await store.change(try namespaces(0))
        @Sendable func versions(_ files: [String: String]) -> Set<String> {
            Set(files.values.map { $0.components(separatedBy: "v: '")[1].prefix { $0 != "'" }.description })
        }
        let stop = ManagedAtomicFlag()
        let torn = ManagedAtomicFlag()
        let reader = Thread {
            while !stop.isSet {
                guard let files = try? store.files() else { continue }
                if versions(Dictionary(uniqueKeysWithValues: files.map { ($0.name, $0.text) })).count != 1 { torn.set() }
            }
        }
        reader.start()
        let watched = Task {
            var state: [String: String] = [:]
            var tornStates = 0
            for await update in store.updates() {
                switch update {
                case .snapshot(let files, _): state = files
                case .changes(let changes, _): for (name, text) in changes { state[name] = text ?? nil }
                case .unreachable: continue
                }
                if versions(state).count != 1 { tornStates += 1 }
                if versions(state) == ["40"] { break }
            }
            return tornStates
        }
        for version in 1...40 {
            _ = try await store.change(try namespaces(version))
            try await Task.sleep(for: .milliseconds(2))
        }
        stop.set()
        let tornStates = await watched.value
        XCTAssertEqual(tornStates, 0, "the watcher reported one file of a change without the other")
        XCTAssertFalse(torn.isSet, "a reader listed one file of a change without the other")
    }

    /// A writer that dies after its commit point lands whole: the next
    /// reader finds the record pending with no writer holding the lock, and
    /// finishes the renames.
    func testACommitLeftPendingByACrashedWriterIsRolledForward() throws {
        let store = DirectoryDatastore(directory: dir)
        try store.write("a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
        try store.write("gone.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: gone}\n")
        // What a writer leaves when it stops right after step 2.
        try "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n".write(toFile: dir + "/.b.yaml.commit-1.tmp", atomically: false, encoding: .utf8)
        try "generation 1\npending\nwrite b.yaml\nremove gone.yaml\n".write(toFile: dir + "/.manx-commit", atomically: false, encoding: .utf8)
        XCTAssertEqual(try store.files().map(\.name), ["a.yaml", "b.yaml"])
        XCTAssertEqual(try DirectoryCommit(directory: dir).record(), .init(generation: 1, pending: false, writes: ["b.yaml"], removes: ["gone.yaml"]))
        // A record nobody can trust stops readers instead of being guessed at.
        try "generation x\n".write(toFile: dir + "/.manx-commit", atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try store.files()) { XCTAssertTrue("\($0)".contains("is not a commit record"), "\($0)") }
    }

    func testKeyedCacheRefusesAResourceUnderAnotherKey() throws {
        let cache = ResourceCache { key, file in ResourceKeys.check(key: key, file) }
        let ns = #"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}"#
        cache.apply(.snapshot(["/calico/resources/v3/core/namespaces/a": ns], revision: 5))
        XCTAssertEqual(Set(try cache.assemble().namespaces.keys), ["a"])
        // The same resource written under a second key would shadow the first.
        cache.apply(.changes(["/calico/resources/v3/core/namespaces/b": ns], revision: 6))
        XCTAssertThrowsError(try cache.assemble()) { error in
            XCTAssertTrue("\(error)".contains("stored under the wrong key: this resource belongs under /calico/resources/v3/core/namespaces/a"), "\(error)")
        }
        cache.apply(.changes(["/calico/resources/v3/core/namespaces/b": nil], revision: 7))
        XCTAssertEqual(cache.revision, 7)
        XCTAssertNoThrow(try cache.assemble())
    }

    func testDocumentsBecomeJSONThatDecodesTheSame() throws {
        let yaml = """
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: web, labels: {quoted: "true", plain: "80"}}
        spec:
          selector: app == 'web'
          ingress:
          - action: Allow
            protocol: TCP
            destination: {ports: [80, "http", "8000:8080"]}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: prod}
        """
        let documents = try ResourceSet.documents(file: "p.yaml", text: yaml)
        XCTAssertEqual(documents.map(\.header.description), ["NetworkPolicy default/web", "Namespace prod"])
        XCTAssertEqual(documents.compactMap { ResourceKeys.key($0.header) },
                       ["/calico/resources/v3/projectcalico.org/networkpolicies/default/web", "/calico/resources/v3/core/namespaces/prod"])
        let fromYAML = try ResourceSet.decode(files: [("p.yaml", yaml)])
        let fromJSON = try ResourceSet.decode(files: documents.map { ("p.yaml", $0.json) })
        XCTAssertEqual(fromYAML, fromJSON)
        XCTAssertThrowsError(try ResourceSet.documents(file: "bad.yaml", text: "apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_Name}\n"))
    }
}

/// A flag one thread sets and another polls.
private final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
