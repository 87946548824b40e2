import ManxSelectors
import XCTest

/// The selector vectors of Calico's own parser tests (libcalico-go
/// lib/selector/parser/parser_test.go): each selector must parse, match
/// the label sets Calico matches and no others, and do the same once
/// printed and parsed again; the bad ones must be refused; the
/// canonicalisation pairs must parse to one selector.
final class CalicoSelectorVectorTests: XCTestCase {
    static let selectors: [(String, [[String: String]], [[String: String]])] = [
        ("a == \"b\"", [["a": "b"], ["a": "b", "c": "d"]], [[:], ["a": "c"], ["c": "d"]]),
        ("a == \"b\" && c == \"d\"", [["a": "b", "c": "d"]], [[:], ["a": "b", "c": "e"], ["a": "c", "c": "d"], ["c": "d"], ["a": "b"]]),
        ("a == \"b\" || c == \"d\"", [["a": "b", "c": "d"], ["a": "b"], ["c": "d"]], [[:], ["a": "e", "c": "e"], ["c": "e"], ["a": "e"]]),
        ("a in {\"'\", '\"', \"c\"}", [["a": "c"], ["a": "\""], ["a": "'"]], [[:], ["a": "e"]]),
        ("a not in {\"'\", '\"', \"c\"}", [[:], ["a": "e"]], [["a": "c"], ["a": "\""], ["a": "'"]]),
        ("a == 'a'", [["a": "a"]], []),
        ("a == \"a\"", [["a": "a"]], []),
        ("a != \"b\"", [["a": "a"]], []),
        ("a != \"a\"", [[:]], []),
        ("a contains \"a\"", [["a": "a"], ["a": "bab"], ["a": "aaa", "b": "c"]], [[:], ["a": "b"], ["b": "aaa"]]),
        ("a starts with \"a\"", [["a": "a"], ["a": "abb"], ["a": "aaa", "b": "c"]], [[:], ["a": "b"], ["a": "baa"], ["b": "aaa"]]),
        ("a ends with \"a\"", [["a": "a"], ["a": "bba"], ["a": "aaa", "b": "c"]], [[:], ["a": "b"], ["a": "aab"], ["b": "aaa"]]),
        ("a in {\"a\"}", [["a": "a"]], []),
        ("!a in {\"a\"}", [["a": "b"]], []),
        ("a in {\"a\", \"b\"}", [["a": "a"]], []),
        ("a in {\"a\", \"b\"}", [["a": "b"]], []),
        ("a not in {\"d\", \"e\"}", [["a": "a"]], []),
        ("has(a)", [["a": "b"]], []),
        ("!has(a)", [["b": "b"]], []),
        ("", [[:]], []),
        (" ", [[:]], []),
        ("", [["a": "b"]], []),
        ("all()", [[:]], []),
        (" all()", [[:]], []),
        (" all()", [["a": "b"]], []),
        ("global()", [[:]], []),
        (" global()", [[:]], []),
        (" global()", [["a": "b"]], []),
        ("a == 'a'", [], [["a": "b"]]),
        ("a == 'a'", [], [[:]]),
        ("a != \"a\"", [], [["a": "a"]]),
        ("a != 'a'", [], [["a": "a"]]),
        ("a in {\"a\"}", [], [["a": "b"]]),
        ("a not in {\"a\"}", [], [["a": "a"]]),
        ("a in {\"a\", \"b\"}", [], [["a": "c"]]),
        ("has(b)", [], [["a": "b"]]),
        ("!!has(b)", [], [["a": "b"]]),
        ("! has(a)", [], [["a": "b"]]),
        ("!has(a)", [], [["a": "b"]]),
        ("!!! has(a)", [], [["a": "b"]]),
        ("!!!has(a)", [], [["a": "b"]]),
        ("!! ! has(a)", [], [["a": "b"]]),
        ("! !!has(a)", [], [["a": "b"]]),
        ("a == 'a1' && b == 'b1'", [["a": "a1", "b": "b1"]], []),
        ("a == 'a1' && b != 'b1'", [], [["a": "a1", "b": "b1"]]),
        ("a != 'a1' && b == 'b1'", [], [["a": "a1", "b": "b1"]]),
        ("a != 'a1' && b != 'b1'", [], [["a": "a1", "b": "b1"]]),
        ("a != 'a1' && !b == 'b1'", [], [["a": "a1", "b": "b1"]]),
        ("!a == 'a1' && b == 'b1'", [], [["a": "a1", "b": "b1"]]),
        ("has(a) && !has(b)", [["a": "a"]], []),
        ("!has(b) && has(a)", [["a": "a"]], []),
        ("!(!has(a) || has(b))", [["a": "a"]], []),
        ("!(has(b) || !has(a))", [["a": "a"]], []),
        ("a == 'a1' || b == 'b1'", [["a": "a1", "b": "b1"]], []),
        ("a == 'a1' || b != 'b1'", [["a": "a1", "b": "b1"]], []),
        ("a != 'a1' || b == 'b1'", [["a": "a1", "b": "b1"]], []),
        ("a != 'a1' || b != 'b1'", [], [["a": "a1", "b": "b1"]]),
        ("! a == 'a1' || ! b == 'b1'", [], [["a": "a1", "b": "b1"]]),
    ]

    static let bad = [
        "b == b", "b contains b", "b starts with b", "b ends with b", "'b1' == b", "b", "a b", "!",
        "foo == \"bar\" &", "foo == \"bar\" |", "foo != ||", "foo in {\"\", ||", "foo in \"\"",
        "\"FOO", "\"FOO'", "'FOO", "(", "(a == \"foo\"", ")", "()", "%", "a == \"b\" && %", "a == \"b\" || %", "a ", "has(foo) &&",
    ]

    /// Calico's input and the canonical form it prints.
    static let canonical = [
        ("", "all()"), (" all() ", "all()"), (" (all() )", "all()"),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
        ("! (a == \"b\"&&! c != \"d\")", "!(a == \"b\" && !c != \"d\")"),
        ("a == \"'\"", "a == \"'\""), ("a == '\"'", "a == '\"'"),
        ("a contains '\"'", "a contains '\"'"), ("a contains \"'\"", "a contains \"'\""),
        ("a startswith '\"'", "a starts with '\"'"), ("a endswith \"'\"", "a ends with \"'\""),
        ("a!='\"'", "a != '\"'"),
        ("a in {\"d\", \"a\", \"b\"}", "a in {\"a\", \"b\", \"d\"}"),
        ("a in {\"z\", \"z\", \"x\", \"y\", \"x\", \"a\"}", "a in {\"a\", \"x\", \"y\", \"z\"}"),
    ]

    func testCalicoMatchVectors() throws {
        var checked = 0
        for (text, matches, nonMatches) in Self.selectors {
            let selector = try SelectorParser.parse(text)
            let reparsed = try SelectorParser.parse(selector.description)
            for labels in matches {
                XCTAssertTrue(selector.matches(labels), "\(text) must match \(labels)")
                XCTAssertTrue(reparsed.matches(labels), "\(selector.description) (printed from \(text)) must match \(labels)")
                checked += 1
            }
            for labels in nonMatches {
                XCTAssertFalse(selector.matches(labels), "\(text) must not match \(labels)")
                XCTAssertFalse(reparsed.matches(labels), "\(selector.description) (printed from \(text)) must not match \(labels)")
                checked += 1
            }
        }
        XCTAssertEqual(checked, 98)
    }

    func testCalicoBadSelectorsAreRefused() {
        for text in Self.bad {
            XCTAssertThrowsError(try SelectorParser.parse(text), "accepted \(text)")
        }
    }

    func testCalicoCanonicalFormsAreTheSameSelector() throws {
        for (input, canonical) in Self.canonical {
            XCTAssertEqual(try SelectorParser.parse(input), try SelectorParser.parse(canonical), input)
        }
    }
}
