import Foundation
import ManxConformance
import ManxDatastore
import ManxEtcd
import ManxIPAM
import ManxModel
import Synchronization
import XCTest

/// etcd is installed by tools/install-deps; a test needing it skips only
/// outside CI, saying why.
func requireEtcd() throws {
    guard !EtcdMember.installed else { return }
    if ProcessInfo.processInfo.environment["CI"] == "true" {
        XCTFail("etcd test cannot run under CI=true: /usr/bin/etcd is missing (tools/install-deps installs etcd-server)")
        throw XCTSkip("failed above")
    }
    print("SKIP etcd test: /usr/bin/etcd is missing (tools/install-deps installs etcd-server)")
    throw XCTSkip("etcd missing")
}

/// A loopback TCP port nothing listens on now.
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    guard ok else { throw NSError(domain: "port", code: Int(errno)) }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// The etcd client and datastore against a real etcd on loopback.
final class EtcdTests: XCTestCase {
    var work = ""
    var member: EtcdMember!
    var client: EtcdClient!

    override func setUpWithError() throws {
        try requireEtcd()
        work = try makeScratchDirectory(testPrefix("etcd"))
        member = EtcdMember(name: "m1", host: "127.0.0.1", netns: nil, clientPort: try freeLoopbackPort(),
                            peerPort: try freeLoopbackPort(), dataDirectory: work + "/data")
        try member.start(cluster: [member], token: "manx-test-\(getpid())", log: work + "/etcd.log")
        try member.waitReady()
        client = try EtcdClient(endpoints: [member.clientURL])
    }

    override func tearDownWithError() throws {
        member?.stop()
        if !work.isEmpty { try? FileManager.default.removeItem(atPath: work) }
    }

    func testReadsWritesAndSwaps() async throws {
        for i in 0..<7 { try await client.put("/t/k\(i)", "v\(i)") }
        try await client.put("/u/other", "x")
        // Pages of 3 give one snapshot at one revision.
        let (kvs, revision) = try await client.list(prefix: "/t/", pageSize: 3)
        XCTAssertEqual(kvs.map(\.key), (0..<7).map { "/t/k\($0)" })
        XCTAssertEqual(kvs.map(\.value), (0..<7).map { "v\($0)" })
        XCTAssertEqual(revision, try member.revision())

        // Compare-and-swap on the mod revision: one writer wins.
        let k0get = try await client.get("/t/k0")
        let k0 = try XCTUnwrap(k0get)
        let first = try await client.transaction(if: [.init(key: "/t/k0", modRevision: k0.modRevision)], then: [.put("/t/k0", "a")])
        let second = try await client.transaction(if: [.init(key: "/t/k0", modRevision: k0.modRevision)], then: [.put("/t/k0", "b")])
        XCTAssertTrue(first.succeeded)
        XCTAssertFalse(second.succeeded)
        let k0now = try await client.get("/t/k0")
        XCTAssertEqual(k0now?.value, "a")
        // Revision 0: create only if absent.
        let create = try await client.transaction(if: [.init(key: "/t/new", modRevision: 0)], then: [.put("/t/new", "n")])
        let again = try await client.transaction(if: [.init(key: "/t/new", modRevision: 0)], then: [.put("/t/new", "m")])
        XCTAssertTrue(create.succeeded)
        XCTAssertFalse(again.succeeded)

        let deleted = try await client.delete("/t/", prefix: true)
        XCTAssertEqual(deleted, 8)
        let k1 = try await client.get("/t/k1")
        XCTAssertNil(k1)
        let other = try await client.get("/u/other")
        XCTAssertEqual(other?.value, "x")

        // A member that does not exist is skipped for the next.
        let unused = try freeLoopbackPort()
        let twoEndpoints = try EtcdClient(endpoints: ["http://127.0.0.1:\(unused)", member.clientURL])
        let viaSecond = try await twoEndpoints.get("/u/other")
        XCTAssertEqual(viaSecond?.value, "x")
        XCTAssertThrowsError(try EtcdClient(endpoints: ["127.0.0.1:2379"])) { error in
            XCTAssertTrue("\(error)".contains("is not a URL like http://127.0.0.1:2379"), "\(error)")
        }
    }

    func testWatchFollowsAndReportsCompaction() async throws {
        let start = try await client.put("/w/a", "1")
        try await client.put("/w/b", "2")
        try await client.delete("/w/a")
        var events: [EtcdClient.Event] = []
        for try await batch in client.watch(prefix: "/w/", from: start) {
            events += batch.events
            if events.count >= 3 { break }
        }
        XCTAssertEqual(events.map(\.key), ["/w/a", "/w/b", "/w/a"])
        XCTAssertEqual(events.map(\.value), ["1", "2", String?.none])

        let now = try await client.put("/w/c", "3")
        try await client.compact(now)
        do {
            for try await batch in client.watch(prefix: "/w/", from: start) where !batch.events.isEmpty {
                XCTFail("events from a compacted revision")
            }
            XCTFail("the watch ended without an error")
        } catch let error as EtcdError {
            XCTAssertEqual(error.compactedAt, now, "\(error)")
        }
    }

    /// The datastore lists, watches, says when etcd is gone, and carries on
    /// from where it stopped when etcd is back.
    func testDatastoreFollowsAndReconnects() async throws {
        try await client.put(ResourceKeys.prefix + "core/namespaces/a", "{}")
        let datastore = EtcdDatastore(client: client)
        var updates = datastore.updates().makeAsyncIterator()
        guard case .snapshot(let all, let listedAt)? = await updates.next() else { return XCTFail("no snapshot first") }
        XCTAssertEqual(Array(all.keys), [ResourceKeys.prefix + "core/namespaces/a"])

        let written = try await client.put(ResourceKeys.prefix + "core/namespaces/b", "{}")
        try await client.put("/elsewhere", "not ours")
        // (An empty change first says the watch is established.)
        var update = await updates.next()
        if case .changes(let none, _)? = update, none.isEmpty { update = await updates.next() }
        guard case .changes(let changes, let revision)? = update else { return XCTFail("no change") }
        XCTAssertEqual(changes, [ResourceKeys.prefix + "core/namespaces/b": "{}"])
        // The revision through which the watch has delivered everything.
        XCTAssertGreaterThanOrEqual(revision, written)
        XCTAssertGreaterThan(written, listedAt)

        member.stop()
        guard case .unreachable? = await updates.next() else { return XCTFail("etcd stopped: not reported") }
        try member.start(cluster: [member], token: "manx-test-\(getpid())", log: work + "/etcd2.log")
        try member.waitReady()
        try await client.delete(ResourceKeys.prefix + "core/namespaces/a")
        // Back: the watch resumes where it stopped (no new snapshot).
        while let update = await updates.next() {
            if case .unreachable = update { continue }
            if case .changes(let none, _) = update, none.isEmpty { continue }
            guard case .changes(let changes, _) = update else { return XCTFail("\(update) after reconnecting") }
            XCTAssertEqual(changes, [ResourceKeys.prefix + "core/namespaces/a": String?.none])
            break
        }
    }

    /// `bpfctl apply` into etcd: all files or none, and never content that
    /// every node would reject; a fix for content that is already wrong
    /// still goes in; past etcd's limit per transaction nothing is written.
    func testApplyIsWholeAndNeverWritesInvalidContent() async throws {
        let store = EtcdDatastore(client: client)
        func change(_ action: ResourceChange.Action, _ files: [(String, String)], inParts: Bool = false) async throws -> [[String]] {
            try await store.change(try files.map { ResourceChange(action, file: $0.0, text: $0.1, documents: try ResourceSet.documents(file: $0.0, text: $0.1)) },
                                   inParts: inParts)
        }
        func keys() async throws -> [String] { try await client.list(prefix: ResourceKeys.prefix).kvs.map(\.key) }
        let tier = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: sec}\nspec: {order: 10}\n"
        let policy = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: sec.p}\nspec: {tier: sec, selector: all()}\n"
        // A policy in a tier that is not there: refused, nothing written.
        do {
            _ = try await change(.apply, [("p.yaml", policy)])
            XCTFail("applied a policy whose tier does not exist")
        } catch {
            XCTAssertTrue("\(error)".contains("tier 'sec' does not exist"), "\(error)")
        }
        let none = try await keys()
        XCTAssertEqual(none, [String]())
        // Both files: one transaction.
        let written = try await change(.apply, [("t.yaml", tier), ("p.yaml", policy)])
        XCTAssertEqual(written, [[ResourceKeys.prefix + "projectcalico.org/tiers/sec"], [ResourceKeys.prefix + "projectcalico.org/globalnetworkpolicies/sec.p"]])
        do { let count = try await keys().count; XCTAssertEqual(count, 2) }
        // Deleting the tier alone would strand the policy.
        do {
            _ = try await change(.delete, [("t.yaml", tier)])
            XCTFail("deleted a tier a policy is in")
        } catch {
            XCTAssertTrue("\(error)".contains("tier 'sec' does not exist"), "\(error)")
        }
        do { let count = try await keys().count; XCTAssertEqual(count, 2) }
        // Content already wrong (written around bpfctl): a fix goes in.
        try await client.put(ResourceKeys.prefix + "projectcalico.org/tiers/sec", "kind: [")
        _ = try await change(.apply, [("t.yaml", tier)])
        // Past etcd's 128 operations per transaction: nothing is written.
        let many = (0..<129).map { "apiVersion: v1\nkind: Namespace\nmetadata: {name: n\($0)}\n" }.joined(separator: "---\n")
        do {
            _ = try await change(.apply, [("many.yaml", many)])
            XCTFail("applied 129 resources in one transaction")
        } catch {
            XCTAssertTrue("\(error)".contains("at most 128 operations"), "\(error)")
        }
        do { let count = try await keys().count; XCTAssertEqual(count, 2) }
        // A bulk load, in parts.
        _ = try await change(.apply, [("many.yaml", many)], inParts: true)
        do { let count = try await keys().count; XCTAssertEqual(count, 131) }
        _ = try await change(.delete, [("many.yaml", many)], inParts: true)
        _ = try await change(.delete, [("t.yaml", tier), ("p.yaml", policy)])
        let left = try await keys()
        XCTAssertEqual(left, [String]())
    }

    /// Three nodes, fifty concurrent assignments each: 150 distinct
    /// addresses, each node's from its own blocks; releasing frees all.
    func testIPAMHandsOutDistinctAddressesUnderContention() async throws {
        let pool = """
        apiVersion: projectcalico.org/v3
        kind: IPPool
        metadata: {name: pods}
        spec: {cidr: 10.60.0.0/16, blockSize: 28}
        """
        _ = try await EtcdDatastore(client: client).change([ResourceChange(.apply, file: "pool.yaml", text: pool,
                                                                           documents: try ResourceSet.documents(file: "pool.yaml", text: pool))])
        let results = Mutex<[String: IPAMAssignment]>([:])
        let failures = Mutex<[String]>([])
        var threads: [Thread] = []
        let done = DispatchGroup()
        for node in ["n1", "n2", "n3"] {
            for i in 0..<50 {
                done.enter()
                // Each node's invocations share a node-local lock, as manx-cni's do.
                let ipam = EtcdIPAM(client: client, lockPath: "\(work)/\(node).lock")
                let thread = Thread {
                    let handle = "\(node)-c\(i)"
                    do {
                        let a = try ipam.assign(IPAMRequest(handle: handle, node: node, workload: "ns/\(handle)"))
                        results.withLock { $0[handle] = a }
                    } catch {
                        failures.withLock { $0.append("\(handle): \(error)") }
                    }
                    done.leave()
                }
                threads.append(thread)
            }
        }
        threads.forEach { $0.start() }
        done.wait()
        XCTAssertEqual(failures.withLock { $0 }, [])
        let all = results.withLock { $0 }
        XCTAssertEqual(all.count, 150)
        XCTAssertEqual(Set(all.values.map(\.address)).count, 150, "every address distinct")
        let blocks = try await client.list(prefix: ResourceKeys.blockPrefix).kvs
        let set = try ResourceSet.decode(files: blocks.map { ($0.key, $0.value) }, kinds: IPAM.kinds)
        for (handle, a) in all {
            let block = try XCTUnwrap(set.ipamBlocks[a.block])
            XCTAssertEqual(block.node, String(handle.prefix(2)), "\(a) comes from a block of its own node")
            XCTAssertTrue(block.allocations.contains { $0.address == a.address && $0.handle == handle })
        }
        // Calico's keys: a claim per block, a handle per assignment.
        let affinities = try await client.list(prefix: "/calico/ipam/v2/host/").kvs
        XCTAssertEqual(affinities.count, set.ipamBlocks.count)
        let handles = try await client.list(prefix: "/calico/ipam/v2/handle/").kvs
        XCTAssertEqual(handles.count, 150)
        // The same handle again: the same address, nothing written.
        let ipam = EtcdIPAM(client: client, lockPath: nil)
        let before = try member.revision()
        XCTAssertEqual(try ipam.assign(IPAMRequest(handle: "n1-c7", node: "n1", workload: "ns/n1-c7")), all["n1-c7"])
        XCTAssertEqual(try member.revision(), before)

        for handle in all.keys { XCTAssertEqual(try ipam.release(handle: handle), [all[handle]!.address]) }
        let after = try await client.list(prefix: ResourceKeys.blockPrefix).kvs
        let emptied = try ResourceSet.decode(files: after.map { ($0.key, $0.value) }, kinds: IPAM.kinds)
        XCTAssertTrue(emptied.ipamBlocks.values.allSatisfy { $0.allocations.isEmpty }, "releasing frees every address")
        let handlesLeft = try await client.list(prefix: "/calico/ipam/v2/handle/").kvs
        XCTAssertEqual(handlesLeft.count, 0)
    }
}
