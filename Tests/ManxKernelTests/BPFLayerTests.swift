import ManxBPF
import ManxBPFObjects
import ManxMapLayout
import XCTest

/// The typed libbpf layer against the real kernel.
final class BPFLayerTests: XCTestCase {
    var pinRoot = ""

    override func setUpWithError() throws {
        try requireKernel()
        pinRoot = "/sys/fs/bpf/manx/\(testPrefix("lib"))"
    }

    override func tearDownWithError() throws {
        if !pinRoot.isEmpty { try? BPFFS.removeTree(pinRoot) }
    }

    func loadWorkload() throws -> BPFObject {
        let object = try BPFObject(elf: BPFObjects.elf(.workload), name: "manx_workload", pinRoot: pinRoot)
        try object.load()
        return object
    }

    func testLoadPinsEveryMapAndSizesMatchTheSharedHeader() throws {
        let object = try loadWorkload()
        for name in object.mapNames { XCTAssertTrue(BPFFS.exists("\(pinRoot)/\(name)"), "\(name) pinned") }
        let checks: [(String, Int, Int)] = [
            (MANX_MAP_ENDPOINTS, MemoryLayout<UInt32>.size, MemoryLayout<manx_endpoint>.size),
            (MANX_MAP_EP_POLICY, MemoryLayout<UInt32>.size, MemoryLayout<manx_ep_policy>.size),
            (MANX_MAP_GENERATION, MemoryLayout<UInt32>.size, MemoryLayout<manx_generation>.size),
            (MANX_MAP_ALLOC, MemoryLayout<manx_alloc_key>.size, MemoryLayout<manx_alloc_value>.size),
            (MANX_MAP_IPCACHE, MemoryLayout<manx_ipcache_key>.size, MemoryLayout<manx_ipcache_value>.size),
            (MANX_MAP_POLICY, MemoryLayout<manx_policy_key>.size, MemoryLayout<manx_policy_value>.size),
            (MANX_MAP_CONNTRACK, MemoryLayout<UInt32>.size, MemoryLayout<UInt32>.size), // endpoint id -> its table
            (MANX_MAP_COUNTERS, MemoryLayout<manx_counters_key>.size, MemoryLayout<manx_counters>.size),
            (MANX_MAP_RULE_HITS, MemoryLayout<UInt32>.size, MemoryLayout<manx_rule_hits>.size),
            (MANX_MAP_ROUTES, MemoryLayout<manx_route_key>.size, MemoryLayout<manx_route_value>.size),
            (MANX_MAP_FRAGS, MemoryLayout<manx_frag_key>.size, MemoryLayout<manx_frag_value>.size),
            (MANX_MAP_NODE_CONFIG, MemoryLayout<UInt32>.size, MemoryLayout<manx_node_config>.size),
            (MANX_MAP_NODE_STATS, MemoryLayout<UInt32>.size, MemoryLayout<UInt64>.size),
            (MANX_MAP_CT_LIVE, MemoryLayout<UInt32>.size, MemoryLayout<UInt32>.size),
            (MANX_MAP_CT_PEERS, MemoryLayout<UInt32>.size, MemoryLayout<UInt32>.size), // peer address -> 1
            (MANX_MAP_CT_PEERS_MISSED, MemoryLayout<UInt32>.size, MemoryLayout<UInt64>.size),
        ]
        for (name, key, value) in checks {
            let map = try object.map(named: name)
            XCTAssertEqual(map.keySize, key, name)
            XCTAssertEqual(map.valueSize, value, name)
        }
    }

    func testMapOperations() throws {
        let object = try loadWorkload()
        let endpoints = try object.map(named: MANX_MAP_ENDPOINTS)
        var ep = manx_endpoint()
        ep.id = 7
        try endpoints.update(UInt32(42), ep)
        XCTAssertEqual(try endpoints.lookup(UInt32(42), as: manx_endpoint.self)?.id, 7)
        XCTAssertNil(try endpoints.lookup(UInt32(43), as: manx_endpoint.self))
        XCTAssertThrowsError(try endpoints.update(UInt32(42), ep, flags: .noExist)) { error in
            XCTAssertEqual((error as? BPFError)?.errno, EEXIST)
            XCTAssertTrue("\(error)".contains("bpf_map_update_elem"))
        }
        // Batch update and iteration.
        try endpoints.updateBatch((100..<300).map { (UInt32($0), ep) })
        XCTAssertEqual(try endpoints.keys(as: UInt32.self).count, 201)
        // Hash maps are read in batches: every element once, with its value.
        let read = try endpoints.entries(as: (UInt32, manx_endpoint).self)
        XCTAssertEqual(read.count, 201)
        XCTAssertEqual(Set(read.map(\.0)), Set([42] + (100..<300).map(UInt32.init)))
        XCTAssertTrue(read.allSatisfy { $0.1.id == 7 })
        XCTAssertTrue(try endpoints.delete(UInt32(42)))
        XCTAssertFalse(try endpoints.delete(UInt32(42)))
        // Wrong Swift types are refused before any syscall.
        XCTAssertThrowsError(try endpoints.lookup(UInt64(1), as: manx_endpoint.self)) { error in
            XCTAssertEqual((error as? BPFError)?.errno, EINVAL)
        }
        // LPM: longest prefix wins.
        let ipcache = try object.map(named: MANX_MAP_IPCACHE)
        var wide = manx_ipcache_value(); wide.identity = 1
        var narrow = manx_ipcache_value(); narrow.identity = 2
        func key(_ generation: UInt32, _ bits: UInt32, _ addr: UInt32) -> manx_ipcache_key {
            manx_ipcache_key(prefixlen: UInt32(MANX_IPCACHE_PREFIX_GENERATION) + bits, generation: generation.bigEndian, addr: addr.bigEndian)
        }
        try ipcache.update(key(0, 8, 0x0a00_0000), wide)
        try ipcache.update(key(0, 24, 0x0a01_0200), narrow)
        XCTAssertEqual(try ipcache.lookup(key(0, 32, 0x0a01_0203), as: manx_ipcache_value.self)?.identity, 2)
        XCTAssertEqual(try ipcache.lookup(key(0, 32, 0x0a09_0203), as: manx_ipcache_value.self)?.identity, 1)
        // Generations never see each other's entries.
        XCTAssertNil(try ipcache.lookup(key(1, 32, 0x0a01_0203), as: manx_ipcache_value.self))
        // Per-CPU values.
        let counters = try object.map(named: MANX_MAP_COUNTERS)
        try counters.updatePerCPU(manx_counters_key(ifindex: 5, direction: 0), manx_counters())
        XCTAssertEqual(try counters.lookupPerCPU(manx_counters_key(ifindex: 5, direction: 0), as: manx_counters.self)?.count, BPFMap.possibleCPUs)
    }

    func testPinnedMapsSurviveTheObjectAndAreReused() throws {
        do {
            let object = try loadWorkload()
            try object.map(named: MANX_MAP_ENDPOINTS).update(UInt32(9), manx_endpoint(flags: 0, id: 4, addr: 5))
        }
        let reopened = try BPFMap.openPinned("\(pinRoot)/\(MANX_MAP_ENDPOINTS)")
        XCTAssertEqual(try reopened.lookup(UInt32(9), as: manx_endpoint.self)?.id, 4)
        let again = try loadWorkload()
        XCTAssertEqual(try again.map(named: MANX_MAP_ENDPOINTS).lookup(UInt32(9), as: manx_endpoint.self)?.addr, 5)
    }

    func testErrorsCarryErrnoAndTheCall() {
        XCTAssertThrowsError(try BPFMap.openPinned("/sys/fs/bpf/manx/does-not-exist")) { error in
            let e = error as? BPFError
            XCTAssertEqual(e?.errno, ENOENT)
            XCTAssertEqual(e?.operation, "bpf_obj_get")
            XCTAssertTrue("\(error)".contains("/sys/fs/bpf/manx/does-not-exist"))
        }
        XCTAssertThrowsError(try BPFObject(elf: [1, 2, 3], name: "garbage", pinRoot: pinRoot)) { error in
            XCTAssertEqual((error as? BPFError)?.operation, "bpf_object__open_mem")
        }
    }

    func testTCAndXDPAttachOnRealInterfaces() throws {
        let pair = try VethPair(prefix: testPrefix("att"), subnet: 11)
        defer { pair.remove() }
        XCTAssertTrue(pair.ping(from: pair.a, to: pair.ipB))

        // XDP prefilter in namespace b: drop everything from a's address.
        let object = try BPFObject(elf: BPFObjects.elf(.xdpPrefilter), name: "manx_xdp", pinRoot: pinRoot)
        try object.load()
        let program = try object.program(named: "manx_xdp_prefilter")
        let deny = try object.map(named: MANX_MAP_XDP_DENY)
        let ifindex = try inNetns(pair.b) { try NetworkInterface.index(named: "veth0") }
        try inNetns(pair.b) { try XDP.attach(program, ifindex: ifindex) }
        XCTAssertEqual(try inNetns(pair.b) { try XDP.attachedProgramID(ifindex: ifindex) }, program.id)
        let key = manx_xdp_deny_key(prefixlen: 32, addr: UInt32(0x0ac9_0b01).bigEndian) // 10.201.11.1
        try deny.update(key, manx_xdp_deny_value())
        XCTAssertFalse(pair.ping(from: pair.a, to: pair.ipB), "XDP drops the denied source")
        XCTAssertGreaterThan(try deny.lookup(key, as: manx_xdp_deny_value.self)?.packets ?? 0, 0)
        try deny.delete(key)
        XCTAssertTrue(pair.ping(from: pair.a, to: pair.ipB))
        try inNetns(pair.b) { try XDP.detach(ifindex: ifindex) }
        XCTAssertNil(try inNetns(pair.b) { try XDP.attachedProgramID(ifindex: ifindex) })

        // tc: attach, replace, query, detach.
        let baseline = try BPFObject(elf: BPFObjects.elf(.baseline), name: "manx_baseline", pinRoot: pinRoot)
        try baseline.load()
        let pass = try baseline.program(named: "manx_tc_pass")
        try inNetns(pair.b) {
            try TC.attach(pass, ifindex: ifindex, hook: .ingress)
            try TC.attach(pass, ifindex: ifindex, hook: .ingress) // replacing is idempotent
        }
        XCTAssertEqual(try inNetns(pair.b) { try TC.attachedProgramID(ifindex: ifindex, hook: .ingress) }, pass.id)
        XCTAssertTrue(pair.ping(from: pair.a, to: pair.ipB))
        XCTAssertTrue(try inNetns(pair.b) { try TC.detach(ifindex: ifindex, hook: .ingress) })
        XCTAssertNil(try inNetns(pair.b) { try TC.attachedProgramID(ifindex: ifindex, hook: .ingress) })
    }
}
