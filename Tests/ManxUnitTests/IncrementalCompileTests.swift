import Foundation
@testable import ManxCompiler
import ManxDatastore
import ManxModel
import XCTest

/// The compiler keeps what it derived between compiles and recomputes only
/// what a change touches. Whatever it reuses, its result must equal a
/// fresh compile of the same resources by a compiler that recovered the
/// same allocations: after every step of random churn (policies added,
/// changed and removed, pods added, relabelled and removed, namespaces
/// relabelled, network sets and profiles changed), the two states are
/// identical, ids included.
final class IncrementalCompileTests: XCTestCase {
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
    }

    /// Resources as keys of a keyed datastore, one document each.
    struct World {
        var docs: [String: String] = [:]
        var rng: Generator

        mutating func pick<T>(_ xs: [T]) -> T { xs[Int.random(in: 0..<xs.count, using: &rng)] }

        mutating func selector() -> String {
            switch Int.random(in: 0..<5, using: &rng) {
            case 0: return "all()"
            case 1: return "app == '\(pick(["a", "b", "c"]))'"
            case 2: return "tier in {'x', 'y'}"
            case 3: return "has(app) && app != 'a'"
            default: return "role == '\(pick(["db", "fe"]))'"
            }
        }

        mutating func peer() -> String {
            switch Int.random(in: 0..<5, using: &rng) {
            case 0: return "{nets: [10.9.\(Int.random(in: 0..<4, using: &rng)).0/24]}"
            case 1: return "{selector: \"\(selector())\"}"
            case 2: return "{selector: \"\(selector())\", namespaceSelector: \"team == 'a'\"}"
            case 3: return "{nets: [10.0.0.\(Int.random(in: 1..<12, using: &rng))/32], notNets: [10.0.0.0/30]}"
            default: return "{selector: \"set == 'n'\"}"
            }
        }

        mutating func rule() -> String {
            let action = pick(["Allow", "Deny", "Pass", "Allow"])
            let ports = pick(["[80]", "[8080, 443]", "['http']", "['1000:2000']"])
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: return "{action: \(action), protocol: TCP, source: \(peer()), destination: {ports: \(ports)}}"
            case 1: return "{action: \(action), source: \(peer())}"
            // A condition on the local side: decided per endpoint.
            case 2: return "{action: \(action), protocol: UDP, destination: {selector: \"\(selector())\", ports: [53]}}"
            default: return "{action: \(action), protocol: TCP, destination: \(peer())}"
            }
        }

        mutating func policy(_ i: Int) {
            let ns = pick(["shop", "other"])
            let order = pick(["1", "10", "10", "100"])
            let tier = pick(["default", "default", "sec"])
            let name = tier == "default" ? "p\(i)" : "sec.p\(i)"
            if Int.random(in: 0..<4, using: &rng) == 0 {
                docs["policy\(i)"] = """
                apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: k\(i), namespace: \(ns)}
                spec:
                  podSelector: {matchLabels: {app: \(pick(["a", "b"]))}}
                  ingress: [{from: [{podSelector: {matchLabels: {app: \(pick(["a", "c"]))}}}], ports: [{port: \(pick(["80", "http"]))}]}]
                """
                return
            }
            docs["policy\(i)"] = """
            apiVersion: projectcalico.org/v3
            kind: NetworkPolicy
            metadata: {name: \(name), namespace: \(ns)}
            spec:
              tier: \(tier)
              order: \(order)
              selector: "\(selector())"
              types: [Ingress, Egress]
              ingress: [\(rule()), \(rule())]
              egress: [\(rule())]
            """
        }

        mutating func pod(_ i: Int) {
            let ns = pick(["shop", "other"])
            let labels = "{app: \(pick(["a", "b", "c"])), tier: \(pick(["x", "y", "z"])), role: \(pick(["db", "fe"]))}"
            let local = Int.random(in: 0..<4, using: &rng) != 0
            let annotation = local ? ", annotations: {manx.io/interface: v\(i)}" : ""
            docs["pod\(i)"] = """
            apiVersion: v1
            kind: Pod
            metadata: {name: pod\(i), namespace: \(ns), labels: \(labels)\(annotation)}
            spec: {containers: [{name: c, ports: [{name: http, containerPort: \(pick(["8080", "80"]))}]}]}
            status: {podIP: 10.0.0.\(i + 1)}
            """
        }

        mutating func namespace(_ name: String) {
            docs["ns-\(name)"] = "apiVersion: v1\nkind: Namespace\nmetadata: {name: \(name), labels: {team: \(pick(["a", "b"]))}}\n"
        }

        mutating func networkSet() {
            docs["netset"] = """
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkSet
            metadata: {name: n, labels: {set: n}}
            spec: {nets: [10.9.\(Int.random(in: 0..<4, using: &rng)).0/24, 10.0.0.\(Int.random(in: 1..<12, using: &rng))/32]}
            """
        }

        /// One random change.
        mutating func churn() {
            switch Int.random(in: 0..<12, using: &rng) {
            case 0...3: policy(Int.random(in: 0..<12, using: &rng))
            case 10, 11:
                // Only the selector: the policy keeps its place in the order.
                let key = "policy\(Int.random(in: 0..<12, using: &rng))"
                docs[key] = docs[key]?.replacingOccurrences(of: #"\n  selector: "[^\n]*""#, with: "\n  selector: \"\(selector())\"",
                                                            options: .regularExpression)
            case 4: docs["policy\(Int.random(in: 0..<12, using: &rng))"] = nil
            case 5, 6: pod(Int.random(in: 0..<12, using: &rng))
            case 7: docs["pod\(Int.random(in: 0..<12, using: &rng))"] = nil
            case 8: namespace(pick(["shop", "other"]))
            default: networkSet()
            }
        }

        /// One local pod, w (app: a), in shop.
        mutating func localPod() {
            docs["pod"] = """
            apiVersion: v1
            kind: Pod
            metadata: {name: w, namespace: shop, labels: {app: a}, annotations: {manx.io/interface: vw}}
            status: {podIP: 10.0.0.1}
            """
        }

        func resources() throws -> ResourceSet {
            try ResourceSet.decode(files: docs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        }
    }

    /// Equal states; the order of address regions (which follows the
    /// compiler's own matcher numbering) does not matter.
    func same(_ a: CompiledState, _ b: CompiledState) -> Bool {
        func regions(_ s: CompiledState) -> [IPCacheEntry] { s.ipcache.sorted { $0.cidr < $1.cidr } }
        func members(_ s: CompiledState) -> [UInt32: [String]] { s.identities.mapValues { $0.members.sorted() } }
        return a.endpoints == b.endpoints && regions(a) == regions(b) && a.rulesets == b.rulesets && a.rules == b.rules
            && members(a) == members(b) && a.allocations == b.allocations
    }

    func assertSame(_ a: CompiledState, _ b: CompiledState, _ message: String, file: StaticString = #filePath, line: UInt = #line) -> Bool {
        if same(a, b) { return true }
        var diffs: [String] = []
        if a.endpoints != b.endpoints { diffs.append("endpoints \(a.endpoints) vs \(b.endpoints)") }
        if a.ipcache.sorted(by: { $0.cidr < $1.cidr }) != b.ipcache.sorted(by: { $0.cidr < $1.cidr }) { diffs.append("ipcache \(a.ipcache) vs \(b.ipcache)") }
        for id in Set(a.rulesets.keys).union(b.rulesets.keys) where a.rulesets[id] != b.rulesets[id] {
            diffs.append("ruleset \(id): \(a.rulesets[id].map(String.init(describing:)) ?? "-") vs \(b.rulesets[id].map(String.init(describing:)) ?? "-")")
        }
        if a.rules != b.rules { diffs.append("rules \(Set(a.rules.keys).symmetricDifference(b.rules.keys))") }
        if a.allocations != b.allocations { diffs.append("allocations") }
        XCTFail("\(message): \(diffs.joined(separator: "\n"))", file: file, line: line)
        return false
    }

    /// One step: the incremental compiler reads through a cache, as manxd
    /// does (its policies carry stamps); the fresh one a full decode.
    func compare(_ world: World, _ incremental: PolicyCompiler, _ cache: ResourceCache, _ inForce: inout Allocations,
                 revision: Int, _ message: String, file: StaticString = #filePath, line: UInt = #line) throws -> Bool {
        let fresh = PolicyCompiler(recovering: inForce).compile(try world.resources())
        cache.apply(.snapshot(world.docs, revision: Int64(revision)))
        let state = incremental.compile(try cache.assemble())
        // The changes the dataplane writes turn the last allocations into these.
        if let changes = state.allocationChanges {
            var ids = inForce.ids
            for key in changes.removed { XCTAssertNotNil(ids.removeValue(forKey: key), "\(message): removed \(key) was not there", file: file, line: line) }
            ids.merge(changes.set) { _, new in new }
            XCTAssertEqual(ids, state.allocations.ids, "\(message): allocation changes", file: file, line: line)
        } else {
            XCTAssertEqual(revision, 1, "\(message): only the first compile has no allocation changes", file: file, line: line)
        }
        inForce = state.allocations
        return assertSame(state, fresh, message, file: file, line: line)
    }

    func testIncrementalEqualsFreshUnderRandomChurn() throws {
        let seeds = Int(ProcessInfo.processInfo.environment["MANX_CHURN_SEEDS"] ?? "") ?? 6
        for seed in 1...seeds {
            var world = World(rng: Generator(state: UInt64(seed)))
            world.namespace("shop")
            world.namespace("other")
            world.docs["tier"] = "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: sec}\nspec: {order: 50}\n"
            for i in 0..<8 { world.pod(i) }
            for i in 0..<8 { world.policy(i) }
            let incremental = PolicyCompiler()
            let cache = ResourceCache()
            var inForce = Allocations()
            for step in 0..<60 {
                guard try compare(world, incremental, cache, &inForce, revision: step + 1, "seed \(seed) step \(step)") else { break }
                world.churn()
            }
        }
    }

    /// A policy in no direction (`types: []`), alone in its tier, changed
    /// in place: its tier is in no applying list (this trapped once).
    func testPolicyInNoDirectionChangedInPlace() throws {
        var world = World(rng: Generator(state: 5))
        world.namespace("shop")
        world.localPod()
        let incremental = PolicyCompiler()
        let cache = ResourceCache()
        var inForce = Allocations()
        for (step, selector) in ["app == 'a'", "app == 'b'", "all()"].enumerated() {
            world.docs["policy"] = """
            apiVersion: projectcalico.org/v3
            kind: NetworkPolicy
            metadata: {name: p, namespace: shop}
            spec: {selector: "\(selector)", types: []}
            """
            _ = try compare(world, incremental, cache, &inForce, revision: step + 1, "selector \(selector)")
        }
    }

    /// A policy that stops applying anywhere gives up its rule ids; when it
    /// applies again, its rules are compiled again rather than reused with
    /// ids the dataplane was told to forget.
    func testRulesOfAPolicyThatStoppedApplyingAreNotReusedStale() throws {
        var world = World(rng: Generator(state: 99))
        world.namespace("shop")
        world.localPod()
        world.docs["policy"] = """
        apiVersion: projectcalico.org/v3
        kind: NetworkPolicy
        metadata: {name: p, namespace: shop}
        spec: {selector: app == 'a', ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]}
        """
        let incremental = PolicyCompiler()
        var inForce = Allocations()
        for labels in ["a", "b", "a"] {
            world.docs["pod"] = world.docs["pod"]!.replacingOccurrences(of: #"\{app: [ab]\}"#, with: "{app: \(labels)}", options: .regularExpression)
            let resources = try world.resources()
            let fresh = PolicyCompiler(recovering: inForce).compile(resources)
            let state = incremental.compile(resources)
            _ = assertSame(state, fresh, "labels \(labels)")
            inForce = state.allocations
        }
    }
}
