import Foundation
@testable import ManxModel
import XCTest
import Yams

/// The JSON reader gives exactly Yams' nodes for what it accepts, and
/// leaves everything else to the YAML parser.
final class JSONNodesTests: XCTestCase {
    /// What libyaml makes of the text (Yams, as the decoder ran it before).
    func yaml(_ text: String) -> [Node]? {
        guard let parser = try? Parser(yaml: text, resolver: .basic, encoding: .utf8) else { return nil }
        var nodes: [Node] = []
        do {
            while let node = try parser.nextRoot() { nodes.append(node) }
        } catch {
            return nil
        }
        return nodes
    }

    /// Equal but for where they were read: every scalar's text, style and
    /// tag, keys in order, collections' styles and tags.
    func same(_ a: Node, _ b: Node) -> Bool {
        switch (a, b) {
        case let (.scalar(x), .scalar(y)): return x.string == y.string && x.style == y.style && "\(x.tag)" == "\(y.tag)"
        case let (.mapping(x), .mapping(y)):
            return x.style == y.style && "\(x.tag)" == "\(y.tag)" && x.count == y.count
                && zip(x, y).allSatisfy { same($0.key, $1.key) && same($0.value, $1.value) }
        case let (.sequence(x), .sequence(y)):
            return x.style == y.style && "\(x.tag)" == "\(y.tag)" && x.count == y.count && zip(x, y).allSatisfy { same($0, $1) }
        default: return false
        }
    }

    func check(_ text: String, accepted: Bool? = nil, file: StaticString = #filePath, line: UInt = #line) {
        let fast = JSONNodes.parse(text)
        if let accepted { XCTAssertEqual(fast != nil, accepted, text, file: file, line: line) }
        guard let fast else { return }
        guard let nodes = yaml(text), nodes.count == 1 else {
            return XCTFail("accepted what YAML does not read as one document: \(text)", file: file, line: line)
        }
        XCTAssertTrue(same(fast, nodes[0]), "\(text): \(fast) vs \(nodes[0])", file: file, line: line)
    }

    /// Every document of the conformance cases, as `bpfctl apply` stores it.
    func testConformanceResourcesAsStoredInEtcd() throws {
        var count = 0
        for root in ["../shared/conformance", "Tests/conformance"] {
            guard let cases = try? FileManager.default.contentsOfDirectory(atPath: root) else { continue }
            for name in cases {
                let path = "\(root)/\(name)/policy.yaml"
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
                for document in try ResourceSet.documents(file: path, text: text) {
                    check(document.json, accepted: true)
                    count += 1
                }
            }
        }
        XCTAssertGreaterThan(count, 50)
    }

    func testEdges() {
        check(#"{"a":1,"b":-0.5e+3,"c":true,"d":null,"e":[],"f":{},"g":"x\"y\\z\n\t"}"#, accepted: true)
        check(#"{"a": [1, 2], "b": {"c": "d"}}"#, accepted: true)
        check("\n  {\"a\":\"b\"}\n", accepted: true)
        check(#"{"a":1,"a":2}"#, accepted: false) // YAML refuses duplicate keys
        check(#"{"a" :1}"#, accepted: false)
        check(#"{"a":"\u0041"}"#, accepted: false)
        check(#"{"a":"\/"}"#, accepted: false)
        check("{\"a\":\"caf\u{e9}\"}", accepted: false)
        check("{\"a\":\t1}", accepted: false)
        check("{\"a\":\n1}", accepted: false)
        check(#"{"a":01}"#, accepted: false)
        check(#"{"a":1.}"#, accepted: false)
        check(#"{"a":trueish}"#, accepted: false)
        check(#"{"a":1}{"b":2}"#, accepted: false)
        check("{\"a\":1}\n---\n{\"b\":2}\n", accepted: false)
        check(#"["a"]"#, accepted: false)
        check(#"{"a":[1 2]}"#, accepted: false)
        check(#"{"a":1,}"#, accepted: false)
        check("{\"\(String(repeating: "k", count: 1100))\":1}", accepted: false)
    }

    /// Random texts near JSON: whatever the reader accepts, YAML reads the same.
    func testRandomTexts() {
        var rng = IncrementalCompileTests.Generator(state: 11)
        let atoms = [#""a""#, #""""#, #""x y""#, #""\"""#, #""\\n""#, ##""#""##, #""a: b""#, #""- x""#, #""{}""#, #""'""#,
                     "0", "-1", "12.5", "1e9", "-0.0E-2", "true", "false", "null", "~", "yes", "0x10", "01", "1.", ".5", "+1", "x",
                     #""\t""#, #""\b\f\r""#, "\"\u{e9}\"", #""%""#, #""&a""#, #""*a""#, #""!t""#, #""@""#, #""`""#]
        let keys = [#""a""#, #""b""#, #""kind""#, #""a b""#, #""?""#, #"":""#, #""-""#, #""""#, #""\"k""#]
        let separators = ["", " ", "  ", "\n", "\t"]
        func value(_ depth: Int) -> String {
            switch Int.random(in: 0..<(depth > 3 ? 1 : 4), using: &rng) {
            case 1:
                let items = (0..<Int.random(in: 0..<4, using: &rng)).map { _ in value(depth + 1) }
                return "[" + items.joined(separator: "," + separators.randomElement(using: &rng)!) + "]"
            case 2, 3:
                let pairs = (0..<Int.random(in: 0..<4, using: &rng)).map { _ in
                    keys.randomElement(using: &rng)! + (Int.random(in: 0..<8, using: &rng) == 0 ? " " : "") + ":"
                        + separators.randomElement(using: &rng)! + value(depth + 1)
                }
                return "{" + pairs.joined(separator: "," + separators.randomElement(using: &rng)!) + "}"
            default:
                return atoms.randomElement(using: &rng)!
            }
        }
        var accepted = 0
        for _ in 0..<3000 {
            let pairs = (0..<Int.random(in: 0..<5, using: &rng)).map { _ in keys.randomElement(using: &rng)! + ":" + value(1) }
            let text = "{" + pairs.joined(separator: ",") + "}"
            check(text)
            if JSONNodes.parse(text) != nil { accepted += 1 }
        }
        XCTAssertGreaterThan(accepted, 300, "the generator should mostly make texts the reader takes")
    }
}
