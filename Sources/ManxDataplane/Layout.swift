import ManxCompiler
import ManxMapLayout
import ManxModel

// Conversions between compiled values and the C structs of the shared
// layout header. Addresses and ports are network byte order in the maps.

extension manx_policy_key {
    init(rulesetID: UInt32, entry: TableEntry) {
        self.init()
        ruleset = rulesetID.bigEndian
        if let identity = entry.identity {
            self.identity = identity.bigEndian
            if let proto = entry.proto {
                self.proto = proto
                port = entry.port.bigEndian
                prefixlen = UInt32(MANX_POLICY_PREFIX_PROTO) + UInt32(entry.portBits)
            } else {
                prefixlen = UInt32(MANX_POLICY_PREFIX_IDENTITY)
            }
        } else {
            prefixlen = UInt32(MANX_POLICY_PREFIX_RULESET)
        }
    }

    var rulesetID: UInt32 { UInt32(bigEndian: ruleset) }

    var entry: TableEntry {
        let decisionless = Decision(.deny, 0)
        if prefixlen <= UInt32(MANX_POLICY_PREFIX_RULESET) {
            return TableEntry(identity: nil, proto: nil, decision: decisionless)
        }
        if prefixlen <= UInt32(MANX_POLICY_PREFIX_IDENTITY) {
            return TableEntry(identity: UInt32(bigEndian: identity), proto: nil, decision: decisionless)
        }
        return TableEntry(identity: UInt32(bigEndian: identity), proto: proto, port: UInt16(bigEndian: port),
                          portBits: Int(prefixlen) - Int(MANX_POLICY_PREFIX_PROTO), decision: decisionless)
    }
}

extension manx_policy_value {
    init(_ d: Decision) {
        self.init()
        rule_id = d.ruleID
        verdict = d.verdict.rawValue
        flags = (d.log ? UInt8(MANX_POL_F_LOG) : 0) | (d.byDefault ? UInt8(MANX_POL_F_DEFAULT) : 0)
    }

    var decision: Decision {
        Decision(verdict == UInt8(MANX_VERDICT_ALLOW.rawValue) ? .allow : .deny, rule_id,
                 log: flags & UInt8(MANX_POL_F_LOG) != 0, byDefault: flags & UInt8(MANX_POL_F_DEFAULT) != 0)
    }
}

extension manx_ipcache_key {
    init(_ cidr: CIDR, generation: UInt32) {
        self.init()
        prefixlen = UInt32(MANX_IPCACHE_PREFIX_GENERATION) + UInt32(cidr.prefixLength)
        self.generation = generation.bigEndian
        addr = cidr.address.networkOrder
    }

    var generationIndex: UInt32 { UInt32(bigEndian: generation) & 1 }

    var cidr: CIDR { CIDR(IPv4Address(UInt32(bigEndian: addr)), Int(prefixlen) - Int(MANX_IPCACHE_PREFIX_GENERATION)) }
}

extension manx_endpoint: @retroactive Equatable {
    public static func == (a: manx_endpoint, b: manx_endpoint) -> Bool {
        a.flags == b.flags && a.id == b.id && a.addr == b.addr
    }
}

extension manx_ep_policy: @retroactive Equatable {
    public static func == (a: manx_ep_policy, b: manx_ep_policy) -> Bool {
        a.ingress_ruleset == b.ingress_ruleset && a.egress_ruleset == b.egress_ruleset && a.identity == b.identity
    }
}

extension manx_ipcache_value: @retroactive Equatable {
    public static func == (a: manx_ipcache_value, b: manx_ipcache_value) -> Bool {
        a.identity == b.identity && a.tunnel_endpoint == b.tunnel_endpoint && a.flags == b.flags
    }
}
