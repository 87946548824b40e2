import ManxCompiler
import ManxMapLayout
import XCTest

/// The BPF programs and Swift share bpf/include/manx/maps.h. These are the
/// sizes and offsets the C compiler gives for the BPF target (checked with
/// pahole-style offsetof reasoning: naturally aligned, no packing); Swift
/// must see exactly the same, or map values would be misread.
final class LayoutTests: XCTestCase {
    func offset<T>(_ path: PartialKeyPath<T>) -> Int { MemoryLayout<T>.offset(of: path)! }

    func testEndpoint() {
        XCTAssertEqual(MemoryLayout<manx_endpoint>.size, 12)
        XCTAssertEqual(offset(\manx_endpoint.flags), 0)
        XCTAssertEqual(offset(\manx_endpoint.id), 4)
        XCTAssertEqual(offset(\manx_endpoint.addr), 8)
        XCTAssertEqual(MemoryLayout<manx_ep_policy>.size, 12)
        XCTAssertEqual(offset(\manx_ep_policy.ingress_ruleset), 0)
        XCTAssertEqual(offset(\manx_ep_policy.egress_ruleset), 4)
        XCTAssertEqual(offset(\manx_ep_policy.identity), 8)
        XCTAssertEqual(MemoryLayout<manx_generation>.size, 4)
        XCTAssertEqual(MANX_GENERATIONS, 2)
    }

    func testAllocations() {
        XCTAssertEqual(MemoryLayout<manx_alloc_key>.size, 36)
        XCTAssertEqual(offset(\manx_alloc_key.digest), 4)
        XCTAssertEqual(MemoryLayout<manx_alloc_value>.size, 4)
        XCTAssertEqual(MANX_ALLOC_IDENTITY.rawValue, Allocations.Kind.identity.rawValue)
        XCTAssertEqual(MANX_ALLOC_RULE.rawValue, Allocations.Kind.rule.rawValue)
        XCTAssertEqual(MANX_ALLOC_RULESET.rawValue, Allocations.Kind.ruleset.rawValue)
        XCTAssertEqual(MANX_RULESET_RESERVED, ReservedRuleset.firstReserved)
        XCTAssertGreaterThanOrEqual(MANX_RULESET_PENDING, MANX_RULESET_RESERVED)
        XCTAssertGreaterThanOrEqual(MANX_RULESET_REVOKED, MANX_RULESET_RESERVED)
    }

    func testIPCache() {
        XCTAssertEqual(MemoryLayout<manx_ipcache_key>.size, 12)
        XCTAssertEqual(offset(\manx_ipcache_key.generation), 4)
        XCTAssertEqual(offset(\manx_ipcache_key.addr), 8)
        XCTAssertEqual(MANX_IPCACHE_PREFIX_GENERATION, 32)
        XCTAssertEqual(MemoryLayout<manx_ipcache_value>.size, 12)
        XCTAssertEqual(offset(\manx_ipcache_value.tunnel_endpoint), 4)
        XCTAssertEqual(offset(\manx_ipcache_value.flags), 8)
    }

    func testPolicy() {
        XCTAssertEqual(MemoryLayout<manx_policy_key>.size, 16)
        XCTAssertEqual(offset(\manx_policy_key.ruleset), 4)
        XCTAssertEqual(offset(\manx_policy_key.identity), 8)
        XCTAssertEqual(offset(\manx_policy_key.proto), 12)
        XCTAssertEqual(offset(\manx_policy_key.pad), 13)
        XCTAssertEqual(offset(\manx_policy_key.port), 14)
        // Prefix lengths count bits of the data after prefixlen.
        XCTAssertEqual(MANX_POLICY_PREFIX_RULESET, 32)
        XCTAssertEqual(MANX_POLICY_PREFIX_IDENTITY, 64)
        XCTAssertEqual(MANX_POLICY_PREFIX_PROTO, 80)
        XCTAssertEqual(MANX_POLICY_PREFIX_FULL, 96)
        XCTAssertEqual(MemoryLayout<manx_policy_value>.size, 8)
        XCTAssertEqual(offset(\manx_policy_value.verdict), 4)
        XCTAssertEqual(offset(\manx_policy_value.flags), 5)
    }

    func testConntrack() {
        XCTAssertEqual(MemoryLayout<manx_ct_key>.size, 16)
        XCTAssertEqual(offset(\manx_ct_key.addr_b), 4)
        XCTAssertEqual(offset(\manx_ct_key.port_a), 8)
        XCTAssertEqual(offset(\manx_ct_key.port_b), 10)
        XCTAssertEqual(offset(\manx_ct_key.proto), 12)
        XCTAssertEqual(offset(\manx_ct_key.query), 13)
        XCTAssertEqual(MemoryLayout<manx_ct_value>.size, 48)
        XCTAssertEqual(offset(\manx_ct_value.last_seen_ns), 8)
        XCTAssertEqual(offset(\manx_ct_value.packets), 16)
        XCTAssertEqual(offset(\manx_ct_value.bytes), 24)
        XCTAssertEqual(offset(\manx_ct_value.ruleset), 32)
        XCTAssertEqual(offset(\manx_ct_value.rule_id), 36)
        XCTAssertEqual(offset(\manx_ct_value.flags), 40)
        XCTAssertEqual(offset(\manx_ct_value.policy_port), 44)
    }

    func testFragments() {
        XCTAssertEqual(MemoryLayout<manx_frag_key>.size, 16)
        XCTAssertEqual(offset(\manx_frag_key.saddr), 4)
        XCTAssertEqual(offset(\manx_frag_key.daddr), 8)
        XCTAssertEqual(offset(\manx_frag_key.ip_id), 12)
        XCTAssertEqual(offset(\manx_frag_key.proto), 14)
        XCTAssertEqual(offset(\manx_frag_key.direction), 15)
        XCTAssertEqual(MemoryLayout<manx_frag_value>.size, 24)
        XCTAssertEqual(offset(\manx_frag_value.ruleset), 8)
        XCTAssertEqual(offset(\manx_frag_value.sport), 12)
        XCTAssertEqual(offset(\manx_frag_value.dport), 14)
        XCTAssertEqual(offset(\manx_frag_value.l4_len), 16)
        XCTAssertEqual(offset(\manx_frag_value.egress), 18)
    }

    func testCountersEventsAndXDP() {
        XCTAssertEqual(MemoryLayout<manx_counters_key>.size, 8)
        XCTAssertEqual(MemoryLayout<manx_counters>.size, 8 * Int(MANX_CNT_MAX.rawValue) + 16)
        XCTAssertEqual(offset(\manx_counters.events_window_start), 8 * Int(MANX_CNT_MAX.rawValue))
        XCTAssertEqual(MemoryLayout<manx_rule_hits>.size, 8)
        XCTAssertEqual(MemoryLayout<manx_flow_event>.size, 40)
        XCTAssertEqual(offset(\manx_flow_event.saddr), 16)
        XCTAssertEqual(offset(\manx_flow_event.peer_identity), 28)
        XCTAssertEqual(offset(\manx_flow_event.reason), 35)
        XCTAssertEqual(MemoryLayout<manx_xdp_deny_key>.size, 8)
        XCTAssertEqual(MemoryLayout<manx_xdp_deny_value>.size, 8)
    }

    func testRoutesAndNodeConfig() {
        XCTAssertEqual(MemoryLayout<manx_route_key>.size, 8)
        XCTAssertEqual(offset(\manx_route_key.addr), 4)
        XCTAssertEqual(MemoryLayout<manx_route_value>.size, 8)
        XCTAssertEqual(offset(\manx_route_value.flags), 4)
        XCTAssertEqual(MemoryLayout<manx_node_config>.size, 24)
        XCTAssertEqual(offset(\manx_node_config.underlay_ifindex), 4)
        XCTAssertEqual(offset(\manx_node_config.underlay_mtu), 8)
        XCTAssertEqual(offset(\manx_node_config.vxlan_vni), 12)
        XCTAssertEqual(offset(\manx_node_config.vxlan_ifindex), 16)
        XCTAssertEqual(offset(\manx_node_config.flags), 20)
        XCTAssertEqual(Int(MANX_STAT_MAX.rawValue), 9)
        XCTAssertEqual(MANX_VXLAN_PORT, 4789)
    }
}
