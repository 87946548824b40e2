import Foundation
import ManxDatastore
import ManxIPAM
import ManxModel
import XCTest

final class IPAMTests: XCTestCase {
    var dir = ""
    var ds: DirectoryDatastore { DirectoryDatastore(directory: dir) }

    override func setUpWithError() throws {
        dir = try makeScratchDirectory("manx-ipam")
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func writePool(_ name: String, _ spec: String) throws {
        try ds.write("pool-\(name).yaml", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: \(name)}\nspec: \(spec)\n")
    }

    func writeNode(_ name: String, labels: String) throws {
        try ds.write("node-\(name).yaml", """
        apiVersion: projectcalico.org/v3
        kind: Node
        metadata: {name: \(name), labels: \(labels)}
        spec: {bgp: {ipv4Address: 10.99.0.1/24}}

        """)
    }

    static func request(_ handle: String, node: String = "n1", pools: [String] = [], address: String? = nil) -> IPAMRequest {
        IPAMRequest(handle: handle, node: node, workload: "x/\(handle)", pools: pools, address: address.flatMap { IPv4Address($0) })
    }

    func block(_ cidr: String) throws -> IPAMBlock? {
        try ds.load().0.ipamBlocks[CIDR.parse(cidr).get()]
    }

    func assertIPAMError(_ code: IPAMError.Code, _ message: String? = nil, file: StaticString = #filePath, line: UInt = #line,
                         _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("no error", file: file, line: line)
        } catch {
            guard let error = error as? IPAMError else { return XCTFail("not an IPAMError: \(error)", file: file, line: line) }
            XCTAssertEqual(error.code, code, "\(error)", file: file, line: line)
            if let message { XCTAssertEqual(error.message, message, file: file, line: line) }
        }
    }

    // MARK: Dynamic assignment

    func testSequentialAssignmentFillsBlocksClaimsTheNextAndExhausts() throws {
        // Blocks .0/30 .4/30 .8/30 .12/30; the pool's .0 and .15 are never handed out.
        try writePool("pool-a", "{cidr: 10.10.0.0/28, blockSize: 30}")
        let ipam = IPAM(datastore: ds)
        var got: [String] = []
        for i in 1...14 {
            let a = try ipam.assign(Self.request("h\(i)"))
            XCTAssertEqual(a.pool, "pool-a")
            XCTAssertTrue(a.block.contains(a.address))
            got.append("\(a.address) \(a.block)")
        }
        XCTAssertEqual(got, [
            "10.10.0.1 10.10.0.0/30", "10.10.0.2 10.10.0.0/30", "10.10.0.3 10.10.0.0/30",
            "10.10.0.4 10.10.0.4/30", "10.10.0.5 10.10.0.4/30", "10.10.0.6 10.10.0.4/30", "10.10.0.7 10.10.0.4/30",
            "10.10.0.8 10.10.0.8/30", "10.10.0.9 10.10.0.8/30", "10.10.0.10 10.10.0.8/30", "10.10.0.11 10.10.0.8/30",
            "10.10.0.12 10.10.0.12/30", "10.10.0.13 10.10.0.12/30", "10.10.0.14 10.10.0.12/30",
        ])
        assertIPAMError(.exhausted, "pool pool-a (10.10.0.0/28) has no free address for node n1") {
            _ = try ipam.assign(Self.request("h15"))
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("ipam-") }.sorted()
        XCTAssertEqual(files, ["ipam-10-10-0-0-30.yaml", "ipam-10-10-0-12-30.yaml", "ipam-10-10-0-4-30.yaml", "ipam-10-10-0-8-30.yaml"])
        // The whole datastore still decodes, with every allocation recorded.
        let set = try ds.load().0
        XCTAssertEqual(set.ipamBlocks.values.map(\.allocations.count).reduce(0, +), 14)
        XCTAssertEqual(set.ipamBlocks.values.map(\.node), Array(repeating: "n1", count: 4))
        let first = try XCTUnwrap(try block("10.10.0.0/30"))
        XCTAssertEqual(first.allocations.first, IPAMBlock.Allocation(address: IPv4Address("10.10.0.1")!, handle: "h1", workload: "x/h1", node: "n1"))
    }

    func testTwoNodesGetDifferentBlocksAndNeverBorrow() throws {
        try writePool("pool-a", "{cidr: 10.10.0.0/29, blockSize: 30}")
        let ipam = IPAM(datastore: ds)
        XCTAssertEqual(try ipam.assign(Self.request("a1", node: "n1")).address.description, "10.10.0.1")
        XCTAssertEqual(try ipam.assign(Self.request("b1", node: "n2")).address.description, "10.10.0.4")
        XCTAssertEqual(try ipam.assign(Self.request("a2", node: "n1")).address.description, "10.10.0.2")
        XCTAssertEqual(try ipam.assign(Self.request("b2", node: "n2")).address.description, "10.10.0.5")
        XCTAssertEqual(try block("10.10.0.0/30")?.node, "n1")
        XCTAssertEqual(try block("10.10.0.4/30")?.node, "n2")
        _ = try ipam.assign(Self.request("a3", node: "n1"))
        // n1's block is full; n2's has 10.10.0.6 free, but strict affinity: no borrowing.
        assertIPAMError(.exhausted, "pool pool-a (10.10.0.0/29) has no free address for node n1") {
            _ = try ipam.assign(Self.request("a4", node: "n1"))
        }
        XCTAssertEqual(try ipam.assign(Self.request("b3", node: "n2")).address.description, "10.10.0.6")
        assertIPAMError(.exhausted) { _ = try ipam.assign(Self.request("n3", node: "n3")) }
    }

    func testNodeSelectorChoosesPools() throws {
        try writePool("pool-a", "{cidr: 10.10.0.0/24, nodeSelector: \"zone == 'a'\"}")
        try writePool("pool-b", "{cidr: 10.20.0.0/24}")
        try writeNode("n1", labels: "{zone: a}")
        try writeNode("n2", labels: "{zone: b}")
        let ipam = IPAM(datastore: ds)
        XCTAssertEqual(try ipam.assign(Self.request("h1", node: "n1")).pool, "pool-a")
        XCTAssertEqual(try ipam.assign(Self.request("h2", node: "n2")).pool, "pool-b")
        // A node without a Node resource has no labels; all() still matches.
        XCTAssertEqual(try ipam.assign(Self.request("h3", node: "ghost")).pool, "pool-b")
        assertIPAMError(.noPool, "pool pool-a (10.10.0.0/24) does not allow node n2 (nodeSelector zone == 'a')") {
            _ = try ipam.assign(Self.request("h4", node: "n2", pools: ["pool-a"]))
        }
        try writePool("pool-b", "{cidr: 10.20.0.0/24, disabled: true}")
        assertIPAMError(.noPool) { _ = try ipam.assign(Self.request("h5", node: "n2")) }
        XCTAssertEqual(try ipam.assign(Self.request("h6", node: "n1")).pool, "pool-a")
    }

    func testPoolsAnnotationChoosesThePool() throws {
        try writePool("pool-a", "{cidr: 10.10.0.0/24}")
        try writePool("pool-b", "{cidr: 10.20.0.0/24}")
        try writePool("pool-c", "{cidr: 10.30.0.0/24, disabled: true}")
        let ipam = IPAM(datastore: ds)
        XCTAssertEqual(try ipam.assign(Self.request("h0")).pool, "pool-a")
        let pools = try IPAM.parsePoolsAnnotation(#"["pool-b"]"#)
        let b = try ipam.assign(Self.request("h1", pools: pools))
        XCTAssertEqual(b.address.description, "10.20.0.1")
        XCTAssertEqual(b.block.description, "10.20.0.0/26")
        XCTAssertEqual(try ipam.assign(Self.request("h2", pools: try IPAM.parsePoolsAnnotation(#"["10.20.0.0/24"]"#))).pool, "pool-b")
        assertIPAMError(.noPool, "no IP pool is named 'pool-z'") { _ = try ipam.assign(Self.request("h3", pools: ["pool-z"])) }
        assertIPAMError(.noPool, "no IP pool has the CIDR 10.40.0.0/24") { _ = try ipam.assign(Self.request("h3", pools: ["10.40.0.0/24"])) }
        assertIPAMError(.noPool, "pool pool-c (10.30.0.0/24) is disabled") { _ = try ipam.assign(Self.request("h3", pools: ["pool-c"])) }
    }

    // MARK: Fixed addresses

    func testFixedAddressInsideAnotherNodesBlock() throws {
        try writePool("pool-a", "{cidr: 10.10.0.0/24, blockSize: 28, nodeSelector: \"zone == 'a'\"}")
        try writeNode("n1", labels: "{zone: a}")
        let ipam = IPAM(datastore: ds)
        XCTAssertEqual(try ipam.assign(Self.request("h1", node: "n1")).address.description, "10.10.0.1")
        // ipAddrs ignores nodeSelector; the block stays n1's, the allocation is n2's.
        let fixed = try ipam.assign(Self.request("h2", node: "n2", address: "10.10.0.9"))
        XCTAssertEqual(fixed, IPAMAssignment(address: IPv4Address("10.10.0.9")!, block: try CIDR.parse("10.10.0.0/28").get(), pool: "pool-a"))
        let b = try XCTUnwrap(try block("10.10.0.0/28"))
        XCTAssertEqual(b.node, "n1")
        XCTAssertEqual(b.allocations.map { "\($0.address) \($0.node)" }, ["10.10.0.1 n1", "10.10.0.9 n2"])
        // n1 skips the taken address.
        XCTAssertEqual(try ipam.assign(Self.request("h3", node: "n1")).address.description, "10.10.0.2")
        // An address in no block: its block is claimed for the requesting node.
        let claimed = try ipam.assign(Self.request("h4", node: "n2", address: "10.10.0.200"))
        XCTAssertEqual(claimed.block.description, "10.10.0.192/28")
        XCTAssertEqual(try block("10.10.0.192/28")?.node, "n2")
        assertIPAMError(.noPool, "10.11.0.1 is not in any enabled IP pool") { _ = try ipam.assign(Self.request("h5", address: "10.11.0.1")) }
        assertIPAMError(.invalidRequest) { _ = try ipam.assign(Self.request("h5", address: "10.10.0.255")) }
        assertIPAMError(.noPool) { _ = try ipam.assign(Self.request("h5", pools: ["pool-q"], address: "10.10.0.7")) }
    }

    func testFixedAddressInUse() throws {
        try writePool("pool-a", "{cidr: 10.10.0.0/24}")
        let ipam = IPAM(datastore: ds)
        _ = try ipam.assign(Self.request("h1", node: "n1", address: "10.10.0.5"))
        assertIPAMError(.addressInUse, "10.10.0.5 is already allocated to handle h1 (x/h1) on node n1") {
            _ = try ipam.assign(Self.request("h2", node: "n2", address: "10.10.0.5"))
        }
        // The same handle asking again gets it (idempotent); asking for another address is refused.
        XCTAssertEqual(try ipam.assign(Self.request("h1", node: "n1", address: "10.10.0.5")).address.description, "10.10.0.5")
        assertIPAMError(.invalidRequest) { _ = try ipam.assign(Self.request("h1", node: "n1", address: "10.10.0.6")) }
    }

    // MARK: Release, idempotence, restart

    func testReleaseThenReassign() throws {
        try writePool("pool-a", "{cidr: 10.10.0.0/24}")
        let ipam = IPAM(datastore: ds)
        XCTAssertEqual(try ipam.assign(Self.request("h1")).address.description, "10.10.0.1")
        XCTAssertEqual(try ipam.assign(Self.request("h2")).address.description, "10.10.0.2")
        XCTAssertEqual(try ipam.release(handle: "h1").map(\.description), ["10.10.0.1"])
        XCTAssertEqual(try ipam.release(handle: "h1"), [])
        XCTAssertEqual(try ipam.release(handle: "never-seen"), [])
        XCTAssertEqual(try ipam.assignments(handle: "h1"), [])
        XCTAssertEqual(try ipam.assign(Self.request("h3")).address.description, "10.10.0.1")
        _ = try ipam.release(handle: "h2")
        _ = try ipam.release(handle: "h3")
        // The empty block keeps its affinity.
        let b = try XCTUnwrap(try block("10.10.0.0/26"))
        XCTAssertEqual(b.node, "n1")
        XCTAssertEqual(b.allocations, [])
    }

    func testAssignIsIdempotentPerHandle() throws {
        try writePool("pool-a", "{cidr: 10.10.0.0/24}")
        let ipam = IPAM(datastore: ds)
        let first = try ipam.assign(Self.request("h1"))
        XCTAssertEqual(try ipam.assign(Self.request("h1")), first)
        XCTAssertEqual(try ipam.assignments(handle: "h1"), [first])
        XCTAssertEqual(try block("10.10.0.0/26")?.allocations.count, 1)
        assertIPAMError(.invalidRequest) { _ = try ipam.assign(Self.request("")) }
        assertIPAMError(.invalidRequest) { _ = try ipam.assign(Self.request("h2", node: "")) }
    }

    func testSurvivesRestart() throws {
        try writePool("pool-a", "{cidr: 10.10.0.0/24}")
        let first = try IPAM(datastore: ds).assign(Self.request("h1"))
        let again = IPAM(datastore: DirectoryDatastore(directory: dir))
        XCTAssertEqual(try again.assignments(handle: "h1"), [first])
        XCTAssertEqual(try again.assign(Self.request("h2")).address.description, "10.10.0.2")
        XCTAssertEqual(try again.assign(Self.request("h1")), first)
    }

    // MARK: Datastore errors

    func testUnrelatedInvalidResourcesDoNotMatterButInvalidIPAMOnesDo() throws {
        try writePool("pool-a", "{cidr: 10.10.0.0/24}")
        try ds.write("policy.yaml", "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {order: abc}\n")
        let ipam = IPAM(datastore: ds)
        XCTAssertEqual(try ipam.assign(Self.request("h1")).address.description, "10.10.0.1")
        try writePool("pool-b", "{cidr: 10.10.0.0/16}")
        assertIPAMError(.datastore) { _ = try ipam.assign(Self.request("h2")) }
        do {
            _ = try ipam.assign(Self.request("h2"))
        } catch {
            XCTAssertTrue(error.message.contains("pool-pool-a.yaml: IPPool pool-a: spec.cidr: 10.10.0.0/24 overlaps IPPool pool-b (10.10.0.0/16)"),
                          error.message)
        }
        try ds.remove("pool-pool-b.yaml")
        try ds.write("ipam-10-10-0-0-26.yaml", "apiVersion: manx.io/v1\nkind: IPAMBlock\nmetadata: {name: 10-10-0-0-26}\nspec: {cidr: 10.10.0.0/26, pool: pool-a}\n")
        do {
            _ = try ipam.assign(Self.request("h2"))
            XCTFail("accepted a block without a node")
        } catch {
            XCTAssertEqual(error.code, .datastore)
            XCTAssertTrue(error.message.contains("ipam-10-10-0-0-26.yaml: IPAMBlock 10-10-0-0-26: spec.node: missing"), error.message)
        }
        let missing = IPAM(datastore: DirectoryDatastore(directory: dir + "/nope"))
        assertIPAMError(.datastore) { _ = try missing.assign(Self.request("h1")) }
    }

    // MARK: Annotations

    func testAnnotations() throws {
        XCTAssertEqual(try IPAM.parsePoolsAnnotation(#"["pool-a", "10.10.0.0/16"]"#), ["pool-a", "10.10.0.0/16"])
        XCTAssertEqual(try IPAM.parsePoolsAnnotation("[]"), [])
        XCTAssertEqual(try IPAM.parseAddressesAnnotation(#"["10.10.0.5"]"#), [IPv4Address("10.10.0.5")!])
        for bad in ["pool-a", #"{"a": 1}"#, #"["10.10.0.0/40"]"#, #"["fd00::/64"]"#, #"[""]"#] {
            assertIPAMError(.invalidRequest) { _ = try IPAM.parsePoolsAnnotation(bad) }
        }
        for bad in ["10.10.0.5", #"["10.10.0.5", "10.10.0.6"]"#, #"["fd00::1"]"#, #"["10.10.0.500"]"#, "[]", "[5]"] {
            assertIPAMError(.invalidRequest) { _ = try IPAM.parseAddressesAnnotation(bad) }
        }
        assertIPAMError(.invalidRequest, "cni.projectcalico.org/ipAddrs: only one IPv4 address is supported, got 2") {
            _ = try IPAM.parseAddressesAnnotation(#"["10.10.0.5", "10.10.0.6"]"#)
        }
    }

    // MARK: Concurrency

    /// 8 threads, each with its own IPAM value (and so its own lock file
    /// description per call), 20 assignments each over two nodes: every
    /// address is distinct and every allocation is on disk.
    func testConcurrentAssignmentsNeverCollide() throws {
        try writePool("pool-a", "{cidr: 10.10.0.0/16, blockSize: 28}")
        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var addresses: [IPv4Address] = []
            var errors: [String] = []
            func add(_ a: IPv4Address) { lock.lock(); addresses.append(a); lock.unlock() }
            func fail(_ e: String) { lock.lock(); errors.append(e); lock.unlock() }
        }
        let results = Results()
        let group = DispatchGroup()
        let directory = dir
        for t in 0..<8 {
            group.enter()
            let thread = Thread {
                let ipam = IPAM(datastore: DirectoryDatastore(directory: directory))
                for i in 0..<20 {
                    do {
                        results.add(try ipam.assign(IPAMRequest(handle: "t\(t)-\(i)", node: "n\(1 + (t + i) % 2)", workload: "x/t\(t)-\(i)")).address)
                    } catch {
                        results.fail("\(error)")
                    }
                }
                group.leave()
            }
            thread.start()
        }
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(results.errors, [])
        XCTAssertEqual(results.addresses.count, 160)
        XCTAssertEqual(Set(results.addresses).count, 160)
        let set = try ds.load().0
        let onDisk = set.ipamBlocks.values.flatMap(\.allocations)
        XCTAssertEqual(Set(onDisk.map(\.address)), Set(results.addresses))
        XCTAssertEqual(Set(onDisk.map(\.handle)).count, 160)
        // Every block belongs to the node that filled it.
        for b in set.ipamBlocks.values { XCTAssertTrue(b.allocations.allSatisfy { $0.node == b.node }) }
    }
}
