@testable import ManxCompiler
@testable import ManxModel
import ManxSelectors
import XCTest

/// The apply index may only leave out policies that cannot apply: checked
/// against evaluating every policy, over random selectors and pods.
final class ApplyIndexTests: XCTestCase {
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    let keys = ["app", "tier", "projectcalico.org/namespace", "pcns.team"]
    let values = ["a", "b", "shop", ""]
    let namespaces = ["shop", "other"]

    func selector(_ depth: Int, _ g: inout Generator) -> Selector {
        let k = keys.randomElement(using: &g)!, v = values.randomElement(using: &g)!
        let leaves: [Selector] = [.all, .equals(k, v), .notEquals(k, v), .inSet(k, [v]), .inSet(k, Set(values.prefix(2))),
                                  .has(k), .notInSet(k, [v])]
        if depth == 0 || Int.random(in: 0..<3, using: &g) == 0 { return leaves.randomElement(using: &g)! }
        switch Int.random(in: 0..<3, using: &g) {
        case 0: return .not(selector(depth - 1, &g))
        case 1: return .and(selector(depth - 1, &g), selector(depth - 1, &g))
        default: return .or(selector(depth - 1, &g), selector(depth - 1, &g))
        }
    }

    func testCandidatesHoldEveryPolicyThatApplies() {
        var g = Generator(state: 7)
        for _ in 0..<50 {
            var matches: [EndpointMatch] = (0..<40).map { _ in
                let scope: NamespaceScope = switch Int.random(in: 0..<3, using: &g) {
                case 0: .any
                case 1: .named(namespaces.randomElement(using: &g)!)
                default: .matching(selector(1, &g))
                }
                return EndpointMatch(selector: selector(3, &g), namespaces: scope)
            }
            var index = ApplyIndex(matches)
            // Some change in place.
            for _ in 0..<10 {
                let i = Int.random(in: 0..<matches.count, using: &g)
                matches[i] = EndpointMatch(selector: selector(3, &g), namespaces: .named(namespaces.randomElement(using: &g)!))
                index.update(i, matches[i])
            }
            for _ in 0..<20 {
                var labels: [String: String] = [:]
                for k in ["app", "tier"] where Bool.random(using: &g) { labels[k] = values.randomElement(using: &g)! }
                let ns = namespaces.randomElement(using: &g)!
                let namespace = Namespace(name: ns, labels: Bool.random(using: &g) ? ["team": "a"] : [:],
                                          ref: ResourceRef(kind: "Namespace", namespace: nil, name: ns, file: "t"))
                let pod = Pod(namespace: ns, name: "p", labels: labels, annotations: [:], ip: nil, ports: [], serviceAccount: "default",
                              nodeName: nil, ref: ResourceRef(kind: "Pod", namespace: ns, name: "p", file: "t"))
                let w = Workload(pod: pod, namespace: namespace)
                let candidates = index.candidates(w)
                XCTAssertEqual(candidates.count, Set(candidates).count, "each policy at most once")
                for (i, m) in matches.enumerated() where m.matches(w) {
                    XCTAssertTrue(candidates.contains(i), "\(m) applies to \(labels) in \(ns) but is not a candidate")
                }
            }
        }
    }
}
