import ManxBPF
import ManxCompiler
import ManxDataplane
import ManxMapLayout
import ManxModel
import ManxNodeState
import XCTest

/// What a pod with CAP_NET_RAW can put on its veth, checked packet by packet
/// with BPF_PROG_TEST_RUN: forged addresses, VLAN tags, other ethertypes and
/// hand-built tunnel packets. The endpoint under test sits at ifindex 1
/// (loopback, which test runs accept); tests that need another endpoint copy
/// its entry there, as the differential test does.
final class AttackProgramTests: XCTestCase {
    var paths = NodePaths(node: "")
    var dataplane: Dataplane!

    /// web (10.0.0.1) accepts TCP 8080 from client only; stranger has no policy.
    static let resources = WorkloadProgramTests.pods
        .replacingOccurrences(of: "metadata: {name: stranger, namespace: shop, labels: {app: other}}",
                              with: "metadata: {name: stranger, namespace: shop, labels: {app: other}, annotations: {manx.io/interface: test-stranger}}")
        + "\n---\n" + WorkloadProgramTests.policy

    override func setUpWithError() throws {
        try requireKernel()
        try load(budget: Dataplane.defaultConntrackBudget)
    }

    func load(budget: Int) throws {
        try dataplane?.uninstall()
        paths = NodePaths(node: testPrefix("atk"))
        let fake: [String: Int32] = ["test-web": 1, "test-stranger": 1002]
        dataplane = try Dataplane(paths: paths, interfaces: .init(resolve: { fake[$0] }, attach: false), conntrackBudget: budget)
        try apply(Self.resources)
    }

    @discardableResult
    func apply(_ yaml: String) throws -> Dataplane.ApplyReport {
        let report = try dataplane.apply(PolicyCompiler(recovering: dataplane.allocations).compile(try ResourceSet.decode(files: [("all.yaml", yaml)])))
        web = try dataplane.maps.endpoints.lookup(UInt32(1), as: manx_endpoint.self) ?? manx_endpoint()
        stranger = try dataplane.maps.endpoints.lookup(UInt32(1002), as: manx_endpoint.self) ?? manx_endpoint()
        return report
    }

    override func tearDownWithError() throws {
        try dataplane?.uninstall()
        dataplane = nil
        removeTestPins(paths)
    }

    var web = manx_endpoint(), stranger = manx_endpoint()

    /// Runs the frame through the endpoint's egress (it sends) or ingress (it receives) program.
    func send(as ep: manx_endpoint, _ frame: [UInt8]) throws -> UInt32 {
        try dataplane.maps.endpoints.update(UInt32(1), ep)
        return try dataplane.fromWorkload.testRun(packet: frame, ifindex: 1).returnValue
    }

    func receive(as ep: manx_endpoint, _ frame: [UInt8]) throws -> UInt32 {
        try dataplane.maps.endpoints.update(UInt32(1), ep)
        return try dataplane.toWorkload.testRun(packet: frame, ifindex: 1, ingressIfindex: 1).returnValue
    }

    func counter(_ c: manx_counter, _ direction: manx_direction) throws -> UInt64 {
        let perCPU = try dataplane.maps.counters.lookupPerCPU(manx_counters_key(ifindex: 1, direction: direction.rawValue), as: manx_counters.self) ?? []
        return perCPU.reduce(0) { acc, v in acc + withUnsafeBytes(of: v.value) { $0.load(fromByteOffset: Int(c.rawValue) * 8, as: UInt64.self) } }
    }

    /// Entries in web's and stranger's conntrack tables.
    func conntrackEntries() throws -> Int {
        try [web, stranger].reduce(0) { n, ep in n + (try XCTUnwrap(dataplane.maps.conntrack.inner(at: ep.id)).keys(as: manx_ct_key.self).count) }
    }

    func testForgedSourceIsDroppedBeforeConntrackAndReported() throws {
        let events = try FlowEventReader(paths)
        // stranger (no policy at all) claims to be client, whom web allows.
        XCTAssertEqual(try send(as: stranger, Frame.tcp("10.0.0.2", 40000, "10.0.0.1", 8080, flags: Frame.syn)), TC_ACT_SHOT)
        XCTAssertEqual(try send(as: stranger, Frame.udp("10.0.0.1", 53, "10.0.0.2", 40000)), TC_ACT_SHOT)
        XCTAssertEqual(try counter(MANX_CNT_DROP_SPOOFED_SOURCE, MANX_DIR_EGRESS), 2)
        XCTAssertEqual(try conntrackEntries(), 0, "a forged packet creates no conntrack entry")
        // Its own address works.
        XCTAssertEqual(try send(as: stranger, Frame.udp("10.0.0.3", 53, "10.0.0.2", 40000)), TC_ACT_OK)
        XCTAssertEqual(try conntrackEntries(), 1)

        let seen = try events.next(timeoutMs: 1000)
        XCTAssertTrue(seen.contains { $0.reason == "drop_spoofed_source" && $0.source == "10.0.0.2:40000" && $0.verdict == "deny" }, "\(seen.map(\.line))")
    }

    /// A pod that floods forged packets (each a denied flow, each an
    /// event) spends only its own event budget: the ring gets at most
    /// MANX_EVENTS_PER_WINDOW per CPU and window from it, the rest is
    /// counted, and another endpoint's denied flow is still reported.
    func testAFloodOfDeniedPacketsCannotFillTheEventRing() throws {
        let events = try FlowEventReader(paths)
        let flood = 2000
        let started = Date()
        for i in 0..<flood {
            XCTAssertEqual(try send(as: stranger, Frame.udp("10.0.0.2", UInt16(10000 + i % 50000), "10.0.0.1", 53)), TC_ACT_SHOT)
        }
        let windows = Int(Date().timeIntervalSince(started) / 0.1) + 1
        var received: [FlowEvent] = []
        while case let batch = try events.next(timeoutMs: 200), !batch.isEmpty { received += batch }
        let limited = try counter(MANX_CNT_EVENT_RATE_LIMITED, MANX_DIR_EGRESS)
        XCTAssertEqual(received.count + Int(limited), flood, "every event is sent or counted as limited")
        XCTAssertLessThanOrEqual(received.count, Int(MANX_EVENTS_PER_WINDOW) * BPFMap.possibleCPUs * windows,
                                 "\(received.count) events in \(windows) windows of 100 ms")
        XCTAssertGreaterThan(limited, 0)
        XCTAssertEqual(try counter(MANX_CNT_EVENT_RING_FULL, MANX_DIR_EGRESS), 0)
        XCTAssertEqual(try counter(MANX_CNT_DROP_SPOOFED_SOURCE, MANX_DIR_EGRESS), UInt64(flood), "every packet is still dropped")
        // Another endpoint's budget is its own. A test run needs a device of
        // that index: a veth of this test's (this kernel has no dummy
        // devices), with an endpoint and counters.
        let device = testPrefix("atkev")
        try sh("ip", "link", "add", device, "type", "veth", "peer", "name", device + "p")
        defer { _ = try? sh("ip", "link", "del", device, allowFailure: true) }
        let other = UInt32(if_nametoindex(device))
        try dataplane.maps.endpoints.update(other, web)
        try dataplane.maps.counters.updatePerCPU(manx_counters_key(ifindex: other, direction: MANX_DIR_EGRESS.rawValue), manx_counters())
        XCTAssertEqual(try dataplane.fromWorkload.testRun(packet: Frame.udp("10.0.0.9", 5000, "10.0.0.2", 53), ifindex: other).returnValue, TC_ACT_SHOT)
        let reported = try events.next(timeoutMs: 1000)
        XCTAssertTrue(reported.contains { $0.reason == "drop_spoofed_source" && $0.source == "10.0.0.9:5000" }, "\(reported.map(\.line))")
    }

    func testPacketForSomeoneElseIsDropped() throws {
        // Delivered to web's veth but addressed to client: never web's to see.
        XCTAssertEqual(try receive(as: web, Frame.tcp("10.0.0.2", 40000, "10.0.0.2", 8080, flags: Frame.syn)), TC_ACT_SHOT)
        XCTAssertEqual(try receive(as: web, Frame.tcp("10.0.0.2", 40000, "10.0.0.9", 8080, flags: Frame.syn)), TC_ACT_SHOT)
        XCTAssertEqual(try counter(MANX_CNT_DROP_WRONG_DEST, MANX_DIR_INGRESS), 2)
        XCTAssertEqual(try conntrackEntries(), 0)
    }

    /// A state that binds an id handed out before to other content (what a
    /// compiler that did not recover the allocations would produce) is
    /// refused before anything is written: rule sets in force would
    /// otherwise read that id with its old meaning.
    func testAStateThatRebindsAnIdIsRefused() throws {
        let generation = dataplane.generation
        var state = PolicyCompiler(recovering: dataplane.allocations).compile(try ResourceSet.decode(files: [("all.yaml", Self.webEgressOpen)]))
        state.allocations.ids[Allocations.Key(.rule, Digest.sha256("some other rule"))] = ReservedRule.first
        XCTAssertThrowsError(try dataplane.apply(state)) { error in
            XCTAssertEqual((error as? BPFError)?.errno, EINVAL)
            XCTAssertTrue("\(error)".contains("rule id 16 was handed out before"), "\(error)")
        }
        XCTAssertEqual(dataplane.generation, generation, "nothing came into force")
        XCTAssertNil(dataplane.allocations.ids[Allocations.Key(.rule, Digest.sha256("some other rule"))])
    }

    /// The conntrack-poisoning sequence: the attacker forges one packet that
    /// makes the victim look like the originator of a flow to the attacker,
    /// then opens that flow, hoping to pass as the victim's reply.
    func testConntrackPoisoningSequence() throws {
        // The victim's egress is open, so a flow it seems to originate needs no policy.
        try apply(Self.webEgressOpen)
        XCTAssertEqual(dataplane.policy(of: web)?.egress_ruleset, UInt32(MANX_RULESET_ALLOW_ALL))
        XCTAssertEqual(try send(as: stranger, Frame.tcp("10.0.0.1", 8080, "10.0.0.3", 443, flags: Frame.syn)), TC_ACT_SHOT)
        XCTAssertEqual(try send(as: stranger, Frame.tcp("10.0.0.3", 443, "10.0.0.1", 8080, flags: Frame.syn)), TC_ACT_OK,
                       "stranger's own egress is open")
        XCTAssertEqual(try receive(as: web, Frame.tcp("10.0.0.3", 443, "10.0.0.1", 8080, flags: Frame.syn)), TC_ACT_SHOT,
                       "web's ingress policy judges the stranger")
        XCTAssertEqual(try receive(as: web, Frame.tcp("10.0.0.3", 443, "10.0.0.1", 8080, flags: Frame.ack)), TC_ACT_SHOT)
        XCTAssertEqual(try counter(MANX_CNT_ALLOW_CT, MANX_DIR_INGRESS), 0)
    }

    static let webEgressOpen = resources.replacingOccurrences(of: "policyTypes: [Ingress, Egress]", with: "policyTypes: [Ingress]")

    // MARK: Conntrack

    func table(_ ep: manx_endpoint) throws -> BPFMap { try XCTUnwrap(dataplane.maps.conntrack.inner(at: ep.id)) }

    /// A flow web opened stays web's: a pod that later gets web's address
    /// (on the same interface, even) starts with an empty table, so the
    /// peer's "replies" are new flows to its own ingress policy.
    func testReusedAddressInheritsNoFlows() throws {
        try apply(Self.webEgressOpen)
        let reply = Frame.udp("10.0.0.3", 9999, "10.0.0.1", 5555)
        XCTAssertEqual(try send(as: web, Frame.udp("10.0.0.1", 5555, "10.0.0.3", 9999)), TC_ACT_OK)
        XCTAssertEqual(try receive(as: web, reply), TC_ACT_OK, "control: the reply reaches web")
        let oldID = web.id
        let oldTable = try dataplane.maps.conntrack.lookup(oldID, as: UInt32.self) // the kernel's id of web's table
        // web goes; newcomer, isolated, arrives with its address and interface.
        let newcomer = Self.webEgressOpen.replacingOccurrences(of: "metadata: {name: web, namespace: shop, labels: {app: web}",
                                                               with: "metadata: {name: newcomer, namespace: shop, labels: {app: web}")
        try apply(newcomer)
        XCTAssertNotEqual(web.id, oldID, "a new endpoint gets a new conntrack table")
        XCTAssertNotNil(oldTable)
        XCTAssertNotEqual(try dataplane.maps.conntrack.lookup(oldID, as: UInt32.self), oldTable, "the old table is released")
        XCTAssertEqual(try receive(as: web, reply), TC_ACT_SHOT, "newcomer inherits web's flow")
    }

    /// What the daemon publishes as enforced (the endpoint status manx-cni
    /// waits for before bringing a veth up) names the interface index the
    /// apply programmed, not the name looked up again: a veth made again
    /// under the same name afterwards has a new index, no entry, and no
    /// status naming it until an apply programs it.
    func testEnforcedStatusNamesTheProgrammedInterfaceIndex() throws {
        final class Index: @unchecked Sendable { var value: Int32 = 1 }
        let index = Index()
        let scratch = NodePaths(node: testPrefix("ats"))
        defer { removeTestPins(scratch) }
        let other = try Dataplane(paths: scratch, interfaces: .init(resolve: { $0 == "test-web" ? index.value : nil }, attach: false))
        defer { try? other.uninstall() }
        let state = PolicyCompiler(recovering: other.allocations).compile(try ResourceSet.decode(files: [("all.yaml", Self.resources)]))
        var published: [EndpointStatus] = []
        _ = try other.apply(state) { published = $0 }
        XCTAssertEqual(published.map(\.ifindex), [1])
        XCTAssertNotNil(try other.maps.endpoints.lookup(UInt32(1), as: manx_endpoint.self))

        index.value = 7 // the veth is made again
        XCTAssertNil(try other.maps.endpoints.lookup(UInt32(7), as: manx_endpoint.self), "the new veth has no programs' entry")
        XCTAssertFalse(published.contains { $0.ifindex == 7 }, "no status names the new veth")
        _ = try other.apply(state) { published = $0 }
        XCTAssertEqual(published.map(\.ifindex), [7])
        XCTAssertNotNil(try other.maps.endpoints.lookup(UInt32(7), as: manx_endpoint.self))
        XCTAssertNil(try other.maps.endpoints.lookup(UInt32(1), as: manx_endpoint.self))
    }

    /// Revocation and expiry skip a table whose manx_ct_live mark is clear.
    /// An expiry pass that empties web's table clears the mark; the next
    /// flow sets it again, so relabelling its peer still revokes that flow.
    func testAFlowAfterTheTableWasFoundEmptyIsStillRevoked() throws {
        // Another client keeps web's rule set as it is when client is
        // relabelled: only revocation stops client's flow.
        let anotherClient = "\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: client2, namespace: shop, labels: {app: client}}\nstatus: {podIP: 10.0.0.4}\n"
        try apply(Self.resources + anotherClient)
        let ruleset = dataplane.policy(of: web)?.ingress_ruleset
        func live() throws -> UInt32? { try dataplane.maps.conntrackLive.lookup(web.id, as: UInt32.self) }
        let syn = Frame.tcp("10.0.0.2", 40000, "10.0.0.1", 8080, flags: Frame.syn)
        XCTAssertEqual(try receive(as: web, syn), TC_ACT_OK)
        XCTAssertEqual(try live(), 1)
        XCTAssertEqual(try dataplane.expireConntrack(now: UInt64(Int64.max)), 1)
        XCTAssertEqual(try live(), 0, "found empty")
        XCTAssertEqual(try dataplane.expireConntrack(now: UInt64(Int64.max)), 0)

        XCTAssertEqual(try receive(as: web, Frame.tcp("10.0.0.2", 40001, "10.0.0.1", 8080, flags: Frame.syn)), TC_ACT_OK)
        XCTAssertEqual(try live(), 1, "a new flow marks the table")
        let ack = Frame.tcp("10.0.0.2", 40001, "10.0.0.1", 8080, flags: Frame.ack)
        XCTAssertEqual(try receive(as: web, ack), TC_ACT_OK, "control: established")
        try apply(Self.resources.replacingOccurrences(of: "labels: {app: client}", with: "labels: {app: former-client}") + anotherClient)
        XCTAssertEqual(dataplane.policy(of: web)?.ingress_ruleset, ruleset, "web's rule set stays")
        XCTAssertEqual(try receive(as: web, ack), TC_ACT_SHOT, "the relabelled client's flow was revoked and judged again")
        // An expiry pass that leaves entries keeps the mark.
        XCTAssertEqual(try dataplane.expireConntrack(now: 0), 0)
        XCTAssertEqual(try live(), 1)
    }

    /// A new pod's address may already be the far end of flows approved
    /// while it was nobody's (the world, or a pod gone before): when the pod
    /// appears, those approvals are revoked. manx_ct_peers spares reading
    /// every table for an address no flow has, and must never spare it for
    /// one that a flow has.
    /// stranger may reach anything but pods labelled db.
    static let strangerEgress = """

    ---
    apiVersion: projectcalico.org/v3
    kind: NetworkPolicy
    metadata: {name: stranger-out, namespace: shop}
    spec:
      selector: "app == 'other'"
      types: [Egress]
      egress: [{action: Deny, destination: {selector: "app == 'db'"}}, {action: Allow}]
    """

    static func db(_ name: String, _ ip: String) -> String {
        "\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: \(name), namespace: shop, labels: {app: db}}\nstatus: {podIP: \(ip)}\n"
    }

    func testAFlowToAnAddressThatBecomesAPodIsRevoked() throws {
        let (egress, db) = (Self.strangerEgress, Self.db)
        try apply(Self.resources + egress)
        XCTAssertEqual(try dataplane.expireConntrack(now: 0), 0) // from here on the index is trusted
        let ack = Frame.tcp("10.0.0.3", 40000, "10.0.0.9", 5432, flags: Frame.ack)
        XCTAssertEqual(try send(as: stranger, Frame.tcp("10.0.0.3", 40000, "10.0.0.9", 5432, flags: Frame.syn)), TC_ACT_OK,
                       "10.0.0.9 is nobody's yet")
        XCTAssertEqual(try send(as: stranger, ack), TC_ACT_OK, "control: established")
        XCTAssertNotNil(try dataplane.maps.conntrackPeers.lookup(IPv4Address("10.0.0.9")!.networkOrder, as: UInt32.self))

        var report = try apply(Self.resources + egress + db("db2", "10.0.0.10"))
        XCTAssertEqual(report.conntrackTablesRead, 0, "no flow has 10.0.0.10: no table is read")
        XCTAssertEqual(try send(as: stranger, ack), TC_ACT_OK)
        report = try apply(Self.resources + egress + db("db2", "10.0.0.10") + db("db", "10.0.0.9"))
        XCTAssertGreaterThan(report.conntrackTablesRead, 0)
        XCTAssertEqual(report.conntrackRevoked, 1)
        XCTAssertEqual(try send(as: stranger, ack), TC_ACT_SHOT, "judged again, as a flow to a db pod")
    }

    /// A flow approved while its endpoint had no policy ("allow all", which
    /// nothing revokes) notes no peer. Approved again by a rule set once a
    /// policy came, it is noted then, and a pod at its peer revokes it.
    func testAFlowApprovedAgainByARuleSetIsNotedThen() throws {
        let peer = IPv4Address("10.0.0.9")!.networkOrder
        XCTAssertEqual(try dataplane.expireConntrack(now: 0), 0)
        let ack = Frame.tcp("10.0.0.3", 40000, "10.0.0.9", 5432, flags: Frame.ack)
        XCTAssertEqual(try send(as: stranger, Frame.tcp("10.0.0.3", 40000, "10.0.0.9", 5432, flags: Frame.syn)), TC_ACT_OK)
        XCTAssertNil(try dataplane.maps.conntrackPeers.lookup(peer, as: UInt32.self), "allow all: nothing to revoke")
        try apply(Self.resources + Self.strangerEgress)
        XCTAssertEqual(try send(as: stranger, ack), TC_ACT_OK, "judged again under stranger's new rule set")
        XCTAssertNotNil(try dataplane.maps.conntrackPeers.lookup(peer, as: UInt32.self))
        let report = try apply(Self.resources + Self.strangerEgress + Self.db("db", "10.0.0.9"))
        XCTAssertEqual(report.conntrackRevoked, 1)
        XCTAssertEqual(try send(as: stranger, ack), TC_ACT_SHOT)
    }

    /// Once the programs failed to note a peer, the index is not trusted
    /// (every table is read) until an expiry pass has noted every table's
    /// peers itself; a daemon starts without trusting it.
    func testAPeerTheProgramsMissedMakesEveryTableRead() throws {
        let pod = Self.db
        XCTAssertEqual(try receive(as: web, Frame.tcp("10.0.0.2", 40000, "10.0.0.1", 8080, flags: Frame.syn)), TC_ACT_OK)
        XCTAssertGreaterThan(try apply(Self.resources + pod("n1", "10.0.0.11")).conntrackTablesRead, 0, "not trusted before an expiry pass")
        XCTAssertEqual(try dataplane.expireConntrack(now: 0), 0)
        XCTAssertEqual(try apply(Self.resources + pod("n2", "10.0.0.12")).conntrackTablesRead, 0)
        // The programs missed one (the map was full).
        try dataplane.maps.conntrackPeersMissed.update(UInt32(0), UInt64(1))
        XCTAssertGreaterThan(try apply(Self.resources + pod("n3", "10.0.0.13")).conntrackTablesRead, 0)
        XCTAssertEqual(try dataplane.expireConntrack(now: 0), 0)
        XCTAssertEqual(try apply(Self.resources + pod("n4", "10.0.0.14")).conntrackTablesRead, 0, "trusted again")
        // What an expiry pass notes itself: a flow whose peer is not there
        // (a predecessor's programs did not note it) is noted.
        let client = IPv4Address("10.0.0.2")!.networkOrder
        XCTAssertTrue(try dataplane.maps.conntrackPeers.delete(client))
        try dataplane.maps.conntrackPeersMissed.update(UInt32(0), UInt64(2))
        XCTAssertEqual(try dataplane.expireConntrack(now: 0), 0)
        XCTAssertNotNil(try dataplane.maps.conntrackPeers.lookup(client, as: UInt32.self))
    }

    /// An endpoint's table holds its budget: past it, its new flows are
    /// refused and counted, its established ones and other endpoints'
    /// flows carry on, and expiry makes room again.
    func testBudgetRefusesNewFlowsEvictsNothing() throws {
        try load(budget: 4)
        XCTAssertEqual(try table(web).maxEntries, 4)
        XCTAssertEqual(try table(web).keySize, MemoryLayout<manx_ct_key>.size)
        XCTAssertEqual(try table(web).valueSize, MemoryLayout<manx_ct_value>.size)
        for port in 40000..<40004 {
            XCTAssertEqual(try receive(as: web, Frame.udp("10.0.0.2", UInt16(port), "10.0.0.1", 53)), TC_ACT_OK)
        }
        XCTAssertEqual(try receive(as: web, Frame.udp("10.0.0.2", 40004, "10.0.0.1", 53)), TC_ACT_SHOT, "over budget")
        XCTAssertEqual(try counter(MANX_CNT_DROP_CT_FULL, MANX_DIR_INGRESS), 1)
        for port in 40000..<40004 {
            XCTAssertEqual(try send(as: web, Frame.udp("10.0.0.1", 53, "10.0.0.2", UInt16(port))), TC_ACT_OK, "established flows stay")
        }
        XCTAssertEqual(try send(as: stranger, Frame.udp("10.0.0.3", 1, "10.0.0.2", 2)), TC_ACT_OK, "other endpoints are not affected")
        // Nothing has idled long enough yet; 61 s from now every UDP flow has.
        XCTAssertEqual(try dataplane.expireConntrack(now: monotonicNanoseconds()), 0)
        XCTAssertEqual(try dataplane.expireConntrack(now: monotonicNanoseconds() + 61_000_000_000), 5)
        XCTAssertEqual(try receive(as: web, Frame.udp("10.0.0.2", 40004, "10.0.0.1", 53)), TC_ACT_OK, "room again")
    }

    /// An entry claiming the endpoint opened a flow that, by its direction,
    /// the peer opened is not trusted: the packet is a new flow.
    func testEntryWhoseRoleContradictsThePacketIsNotTrusted() throws {
        try apply(Self.webEgressOpen) // web's egress rule set is 0: "approved" by anything
        var key = manx_ct_key()
        key.addr_a = IPv4Address("10.0.0.1")!.networkOrder
        key.addr_b = IPv4Address("10.0.0.3")!.networkOrder
        key.port_a = UInt16(8080).bigEndian
        key.port_b = UInt16(443).bigEndian
        key.proto = 6
        var forged = manx_ct_value()
        forged.last_seen_ns = monotonicNanoseconds()
        forged.ruleset = try XCTUnwrap(dataplane.policy(of: web)).egress_ruleset
        forged.flags = UInt32(MANX_CT_F_EP_ORIGINATED) // but "b", the stranger, is the originator
        forged.policy_port = UInt16(8080).bigEndian
        try table(web).update(key, forged)
        XCTAssertEqual(try receive(as: web, Frame.tcp("10.0.0.3", 443, "10.0.0.1", 8080, flags: Frame.ack)), TC_ACT_SHOT)
        XCTAssertEqual(try counter(MANX_CNT_ALLOW_CT, MANX_DIR_INGRESS), 0)
    }

    /// A CPU may stamp an entry after another read the clock: a last_seen
    /// slightly ahead of "now" is a live flow, not one idle for 584 years.
    func testIdleTimeIsSigned() throws {
        XCTAssertEqual(try receive(as: web, Frame.tcp("10.0.0.2", 40000, "10.0.0.1", 8080, flags: Frame.syn)), TC_ACT_OK)
        let t = try table(web)
        let (key, value) = try XCTUnwrap(t.entries(as: (manx_ct_key, manx_ct_value).self).first)
        var ahead = value
        ahead.last_seen_ns = monotonicNanoseconds() + 5_000_000_000
        try t.update(key, ahead)
        XCTAssertEqual(try receive(as: web, Frame.tcp("10.0.0.2", 40000, "10.0.0.1", 8080, flags: Frame.ack)), TC_ACT_OK)
        XCTAssertEqual(try counter(MANX_CNT_ALLOW_CT, MANX_DIR_INGRESS), 1)
        XCTAssertEqual(try dataplane.expireConntrack(now: monotonicNanoseconds()), 0)
    }

    /// Kubernetes' node rule, told by how a packet entered: one the node
    /// itself sent (it arrived on no interface) reaches web whatever its
    /// ingress policy, and web's replies pass its isolated egress. The same
    /// bytes arriving on an interface (the underlay, a tunnel, a pod) get
    /// web's policy, even on the node's established flow.
    func testNodeRuleByHowThePacketEntered() throws {
        let node = "10.99.0.1"
        func fromNode(_ frame: [UInt8]) throws -> UInt32 {
            try dataplane.toWorkload.testRun(packet: frame, ifindex: 1, ingressIfindex: 0).returnValue
        }
        XCTAssertEqual(try receive(as: web, Frame.tcp(node, 50000, "10.0.0.1", 9999, flags: Frame.syn)), TC_ACT_SHOT, "from an interface")
        XCTAssertEqual(try fromNode(Frame.tcp(node, 50000, "10.0.0.1", 9999, flags: Frame.syn)), TC_ACT_OK)
        XCTAssertEqual(try counter(MANX_CNT_ALLOW_NODE, MANX_DIR_INGRESS), 1)
        XCTAssertEqual(try send(as: web, Frame.tcp("10.0.0.1", 9999, node, 50000, flags: Frame.syn | Frame.ack)), TC_ACT_OK,
                       "the reply passes web's isolated egress")
        XCTAssertEqual(try fromNode(Frame.tcp(node, 50000, "10.0.0.1", 9999, flags: Frame.ack)), TC_ACT_OK)
        XCTAssertEqual(try receive(as: web, Frame.tcp(node, 50000, "10.0.0.1", 9999, flags: Frame.ack)), TC_ACT_SHOT,
                       "a copy of the node's flow from an interface")
        // web to its node stays under web's (isolated) egress policy.
        XCTAssertEqual(try send(as: web, Frame.tcp("10.0.0.1", 40000, node, 22, flags: Frame.syn)), TC_ACT_SHOT)
        let entry = try XCTUnwrap(table(web).entries(as: (manx_ct_key, manx_ct_value).self).first)
        XCTAssertEqual(entry.1.ruleset, MANX_RULESET_NODE)
        XCTAssertEqual(entry.1.rule_id, ReservedRule.node)
    }

    // MARK: ICMP

    /// Each ICMP query type is its own flow: allowed timestamp requests do
    /// not carry an information request, a denied type sent first does not
    /// block an allowed one, and a reply passes only on its request's flow.
    func testICMPTypesAreJudgedPerMessage() throws {
        try apply(Self.resources + """

        ---
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: timestamps, namespace: shop}
        spec:
          selector: app == 'web'
          types: [Ingress]
          ingress: [{action: Allow, protocol: ICMP, icmp: {type: 13}}]
        """)
        for _ in 0..<5 { XCTAssertEqual(try receive(as: web, Frame.icmpQuery("10.0.0.2", "10.0.0.1", type: 13)), TC_ACT_OK) }
        XCTAssertEqual(try receive(as: web, Frame.icmpQuery("10.0.0.2", "10.0.0.1", type: 15)), TC_ACT_SHOT, "type 15 after allowed 13s")
        XCTAssertEqual(try receive(as: web, Frame.icmpQuery("10.0.0.3", "10.0.0.1", type: 15, id: 9)), TC_ACT_SHOT)
        XCTAssertEqual(try receive(as: web, Frame.icmpQuery("10.0.0.3", "10.0.0.1", type: 13, id: 9)), TC_ACT_OK, "a denied type first blocks nothing")
        // web's egress is isolated: its timestamp reply passes on the flow...
        XCTAssertEqual(try send(as: web, Frame.icmpQuery("10.0.0.1", "10.0.0.2", type: 14)), TC_ACT_OK)
        // ...but not a reply nobody asked for, nor a request sent back on the flow.
        XCTAssertEqual(try send(as: web, Frame.icmpQuery("10.0.0.1", "10.0.0.2", type: 14, id: 99)), TC_ACT_SHOT)
        XCTAssertEqual(try send(as: web, Frame.icmpQuery("10.0.0.1", "10.0.0.2", type: 13)), TC_ACT_SHOT)
        // Other messages (router advertisement) are judged alone and open nothing.
        XCTAssertEqual(try receive(as: web, Frame.icmpQuery("10.0.0.2", "10.0.0.1", type: 9)), TC_ACT_SHOT)
    }

    /// An ICMP error passes exactly when it quotes a live flow of the
    /// endpoint's, sent by it (when it receives the error) or to it (when
    /// it sends one), whatever the policy.
    func testICMPErrorsFollowTheFlowTheyQuote() throws {
        try apply(Self.webEgressOpen)
        let out = Frame.tcp("10.0.0.1", 5555, "10.0.0.3", 80, flags: Frame.syn)
        XCTAssertEqual(try send(as: web, out), TC_ACT_OK)
        // A router on the path: fragmentation needed, to web's isolated ingress.
        XCTAssertEqual(try receive(as: web, Frame.icmpError("10.99.0.254", "10.0.0.1", quoting: out)), TC_ACT_OK)
        XCTAssertEqual(try counter(MANX_CNT_ALLOW_RELATED, MANX_DIR_INGRESS), 1)
        for quote in [Frame.tcp("10.0.0.1", 5556, "10.0.0.3", 80, flags: Frame.syn),   // a flow web never opened
                      Frame.tcp("10.0.0.2", 5555, "10.0.0.3", 80, flags: Frame.syn),   // someone else's packet
                      Frame.icmpError("10.0.0.1", "10.0.0.3", quoting: out)] {          // an error about an error
            XCTAssertEqual(try receive(as: web, Frame.icmpError("10.99.0.254", "10.0.0.1", quoting: quote)), TC_ACT_SHOT)
        }
        XCTAssertEqual(try counter(MANX_CNT_DROP_ICMP_UNRELATED, MANX_DIR_INGRESS), 3)
        // web's egress, isolated again: port unreachable about a datagram it received.
        try apply(Self.resources)
        let dns = Frame.udp("10.0.0.2", 40000, "10.0.0.1", 53)
        XCTAssertEqual(try receive(as: web, dns), TC_ACT_OK)
        XCTAssertEqual(try send(as: web, Frame.icmpError("10.0.0.1", "10.0.0.2", code: 3, quoting: dns)), TC_ACT_OK)
        XCTAssertEqual(try send(as: web, Frame.icmpError("10.0.0.1", "10.0.0.2", code: 3, quoting: Frame.udp("10.0.0.2", 40001, "10.0.0.1", 53))),
                       TC_ACT_SHOT)
    }

    // MARK: Fragments

    static let moreFragments: UInt16 = 0x2000

    /// A fragment of a UDP datagram: the first carries the UDP header and
    /// 16 bytes; later ones start at `offset` (in 8-byte units).
    func udpFragment(_ src: String, _ sport: UInt16, _ dst: String, _ dport: UInt16, id: UInt16, offset: UInt16, last: Bool = false) -> [UInt8] {
        let flags = last ? 0 : Self.moreFragments
        if offset == 0 {
            return Frame.ipv4(src: src, dst: dst, proto: 17, Frame.be16(sport) + Frame.be16(dport) + Frame.be16(1000) + [0, 0]
                              + [UInt8](repeating: 1, count: 16), fragmentOffset: flags, id: id)
        }
        return Frame.ipv4(src: src, dst: dst, proto: 17, [UInt8](repeating: 2, count: 24), fragmentOffset: flags | offset, id: id)
    }

    /// Later fragments get their first fragment's verdict, under the rule set
    /// that decided it; a datagram denied, or never seen, gets nothing.
    func testFragmentsFollowTheirDatagram() throws {
        // client may send to web's UDP 53.
        XCTAssertEqual(try receive(as: web, udpFragment("10.0.0.2", 40000, "10.0.0.1", 53, id: 100, offset: 0)), TC_ACT_OK)
        XCTAssertEqual(try receive(as: web, udpFragment("10.0.0.2", 40000, "10.0.0.1", 53, id: 100, offset: 3)), TC_ACT_OK)
        XCTAssertEqual(try receive(as: web, udpFragment("10.0.0.2", 40000, "10.0.0.1", 53, id: 100, offset: 6, last: true)), TC_ACT_OK)
        XCTAssertEqual(try counter(MANX_CNT_ALLOW_FRAGMENT, MANX_DIR_INGRESS), 2)
        // web's reply, in fragments, through its isolated egress on the flow.
        XCTAssertEqual(try send(as: web, udpFragment("10.0.0.1", 53, "10.0.0.2", 40000, id: 7, offset: 0)), TC_ACT_OK)
        XCTAssertEqual(try send(as: web, udpFragment("10.0.0.1", 53, "10.0.0.2", 40000, id: 7, offset: 3, last: true)), TC_ACT_OK)
        // stranger is denied: its later fragments too.
        XCTAssertEqual(try receive(as: web, udpFragment("10.0.0.3", 40000, "10.0.0.1", 53, id: 101, offset: 0)), TC_ACT_SHOT)
        XCTAssertEqual(try receive(as: web, udpFragment("10.0.0.3", 40000, "10.0.0.1", 53, id: 101, offset: 3)), TC_ACT_SHOT)
        // A later fragment whose first fragment never came.
        XCTAssertEqual(try receive(as: web, udpFragment("10.0.0.2", 40000, "10.0.0.1", 53, id: 102, offset: 3)), TC_ACT_SHOT)
        XCTAssertEqual(try counter(MANX_CNT_DROP_FRAGMENT, MANX_DIR_INGRESS), 2)
        // The rule set that let the first fragment in is replaced: the rest stay out.
        XCTAssertEqual(try receive(as: web, udpFragment("10.0.0.2", 40000, "10.0.0.1", 53, id: 103, offset: 0)), TC_ACT_OK)
        try apply(Self.resources.replacingOccurrences(of: "app: client", with: "app: nobody"))
        XCTAssertEqual(try receive(as: web, udpFragment("10.0.0.2", 40000, "10.0.0.1", 53, id: 103, offset: 3)), TC_ACT_SHOT)
    }

    /// The fragment attacks of RFC 1858 and their kin, each with its counter.
    func testFragmentAttacks() throws {
        // A first fragment that claims (IP total length) to end inside its
        // TCP header, with bytes after it that policy would read as ports.
        var tiny = Frame.tcp("10.0.0.2", 40000, "10.0.0.1", 8080, flags: Frame.syn)
        tiny[14 + 6] = 0x20 // more fragments
        tiny[14 + 2] = 0; tiny[14 + 3] = 28 // 20 bytes of IP + 8 of TCP
        XCTAssertEqual(try receive(as: web, tiny), TC_ACT_SHOT)
        XCTAssertEqual(try counter(MANX_CNT_DROP_FRAG_TINY, MANX_DIR_INGRESS), 1)
        // An allowed TCP first fragment, then fragments that rewrite its header.
        let first = Frame.ipv4(src: "10.0.0.2", dst: "10.0.0.1", proto: 6,
                               Array(Frame.tcp("10.0.0.2", 40001, "10.0.0.1", 8080, flags: Frame.syn)[34...]) + [UInt8](repeating: 0, count: 20),
                               fragmentOffset: Self.moreFragments, id: 300)
        XCTAssertEqual(try receive(as: web, first), TC_ACT_OK)
        for offset: UInt16 in [1, 2] {
            let overlap = Frame.ipv4(src: "10.0.0.2", dst: "10.0.0.1", proto: 6, [UInt8](repeating: 0, count: 16),
                                     fragmentOffset: Self.moreFragments | offset, id: 300)
            XCTAssertEqual(try receive(as: web, overlap), TC_ACT_SHOT, "offset \(offset) lands in the TCP header")
        }
        XCTAssertEqual(try receive(as: web, first), TC_ACT_SHOT, "a second first fragment")
        XCTAssertEqual(try counter(MANX_CNT_DROP_FRAG_OVERLAP, MANX_DIR_INGRESS), 3)
        let rest = Frame.ipv4(src: "10.0.0.2", dst: "10.0.0.1", proto: 6, [UInt8](repeating: 0, count: 16), fragmentOffset: 5, id: 300)
        XCTAssertEqual(try receive(as: web, rest), TC_ACT_OK, "the datagram's own tail passes")
    }

    func testVLANTagsAndOtherEthertypesAreDropped() throws {
        let syn = Frame.tcp("10.0.0.2", 40000, "10.0.0.1", 8080, flags: Frame.syn)
        for tpids: [UInt16] in [[0x8100], [0x88a8], [0x8100, 0x8100], [0x88a8, 0x8100], [0x9100, 0x8100]] {
            XCTAssertEqual(try receive(as: web, Frame.tagged(syn, tpids: tpids)), TC_ACT_SHOT, "tags \(tpids)")
            XCTAssertEqual(try send(as: web, Frame.tagged(Frame.udp("10.0.0.1", 53, "10.0.0.2", 40000), tpids: tpids)), TC_ACT_SHOT)
        }
        XCTAssertEqual(try counter(MANX_CNT_DROP_VLAN, MANX_DIR_INGRESS), 5)
        XCTAssertEqual(try counter(MANX_CNT_DROP_VLAN, MANX_DIR_EGRESS), 5)
        // Only ARP passes as non-IP: LLDP, PPPoE, MPLS, IPX...
        for ethertype: UInt16 in [0x88cc, 0x8864, 0x8847, 0x8137] {
            XCTAssertEqual(try send(as: web, Frame.ethernet(ethertype, [UInt8](repeating: 0x45, count: 46))), TC_ACT_SHOT)
        }
        XCTAssertEqual(try counter(MANX_CNT_DROP_NON_IP, MANX_DIR_EGRESS), 4)
        XCTAssertEqual(try send(as: web, Frame.arp), TC_ACT_OK)
        XCTAssertEqual(try counter(MANX_CNT_ALLOW_ARP, MANX_DIR_EGRESS), 1)
        XCTAssertEqual(try conntrackEntries(), 0)
    }

    func testWorkloadsCannotSendTunnelPackets() throws {
        // stranger's egress is open, so only the tunnel rule stops these.
        let inner = Array(Frame.tcp("10.0.0.2", 40000, "10.0.0.1", 8080, flags: Frame.syn)[14...])
        XCTAssertEqual(try send(as: stranger, Frame.ipv4(src: "10.0.0.3", dst: "10.99.0.2", proto: 4, inner)), TC_ACT_SHOT)
        XCTAssertEqual(try send(as: stranger, Frame.vxlan(src: "10.0.0.3", dst: "10.99.0.2", inner: Frame.ethernet(0x0800, inner))), TC_ACT_SHOT)
        XCTAssertEqual(try counter(MANX_CNT_DROP_TUNNEL, MANX_DIR_EGRESS), 2)
        XCTAssertEqual(try conntrackEntries(), 0)
        // Other UDP and IP protocols are policy's business.
        XCTAssertEqual(try send(as: stranger, Frame.udp("10.0.0.3", 4789, "10.99.0.2", 53)), TC_ACT_OK)
        XCTAssertEqual(try send(as: stranger, Frame.ipv4(src: "10.0.0.3", dst: "10.99.0.2", proto: 47, [0, 0, 8, 0])), TC_ACT_OK)
    }
}

final class SharedConstantTests: XCTestCase {
    func testReservedIDsMatchTheHeader() {
        XCTAssertEqual(ReservedRule.none, UInt32(MANX_RULE_NONE))
        XCTAssertEqual(ReservedRule.defaultDeny, UInt32(MANX_RULE_DEFAULT_DENY))
        XCTAssertEqual(ReservedRule.node, UInt32(MANX_RULE_NODE))
        XCTAssertEqual(ReservedRule.first, UInt32(MANX_RULE_FIRST))
        XCTAssertEqual(ReservedIdentity.unknown, UInt32(MANX_IDENTITY_UNKNOWN))
        XCTAssertEqual(ReservedIdentity.host, UInt32(MANX_IDENTITY_HOST))
        XCTAssertEqual(ReservedIdentity.world, UInt32(MANX_IDENTITY_WORLD))
        XCTAssertEqual(ReservedIdentity.first, UInt32(MANX_IDENTITY_FIRST))
    }

    func testEveryCounterHasAName() {
        XCTAssertEqual(DumpReport.counterNames.count, Int(MANX_CNT_MAX.rawValue))
        XCTAssertEqual(DumpReport.counterNames[Int(MANX_CNT_DROP_TUNNEL.rawValue)], "drop_tunnel")
        XCTAssertEqual(DumpReport.counterNames[Int(MANX_CNT_BYTES.rawValue)], "bytes")
    }
}
