import XCTest
@testable import ManxSelectors

/// SelectorParser and LabelValidation, driven by the case tables at the end
/// of this file; every check reports through `XCTFail`.
final class SelectorParserTests: XCTestCase {
    func testValidSelectorsParseMatchAndRoundTrip() {
        let checks = checkValidSelectorCases { XCTFail($0) }
        XCTAssertGreaterThanOrEqual(checks, SelectorCases.valid.count)
    }

    func testInvalidSelectorsReportPositionAndReason() {
        XCTAssertEqual(checkInvalidSelectorCases { XCTFail($0) }, SelectorCases.invalid.count)
    }

    func testDescriptionsParseBack() {
        XCTAssertGreaterThan(checkSelectorRoundTrips { XCTFail($0) }, 500)
    }

    /// As a rule's namespaceSelector, Calico reads all() as "namespaced"
    /// and global() as "not namespaced", inside any expression.
    func testNamespaceSelectorsReadAllAndGlobalAsCalicoDoes() throws {
        let ns = ["team": "a"]
        func check(_ text: String, namespaced: Bool, global: Bool, line: UInt = #line) throws {
            let sel = try SelectorParser.parse(text)
            XCTAssertEqual(sel.matchesNamespace(ns, namespaced: true), namespaced, "\(text) against a namespaced thing", line: line)
            XCTAssertEqual(sel.matchesNamespace([:], namespaced: false), global, "\(text) against a global thing", line: line)
        }
        try check("all()", namespaced: true, global: false)
        try check("global()", namespaced: false, global: true)
        try check("!all()", namespaced: false, global: true)
        try check("all() || global()", namespaced: true, global: true)
        try check("team == 'a'", namespaced: true, global: false)
        try check("team != 'b'", namespaced: true, global: true)
        try check("!has(team)", namespaced: false, global: true)
        try check("global() || team == 'a'", namespaced: true, global: true)
    }

    func testLabelValidation() {
        XCTAssertGreaterThan(checkLabelValidationCases { XCTFail($0) }, 0)
    }

    func testErrorDescription() {
        XCTAssertThrowsError(try SelectorParser.parse("app == web")) { error in
            XCTAssertEqual(error as? SelectorParseError,
                           SelectorParseError(position: 7, reason: "expected a quoted string after '==' but found 'web'"))
            XCTAssertEqual("\(error)", "at position 7: expected a quoted string after '==' but found 'web'")
        }
    }

    func testTypedThrow() {
        do {
            _ = try SelectorParser.parse("a in {'x'")
            XCTFail("should not parse")
        } catch {
            // `error` is statically a SelectorParseError (typed throws).
            XCTAssertEqual(error.position, 9)
        }
    }

    func testCalicoExamples() throws {
        let selector = try SelectorParser.parse("ns-label == 'absent' || projectcalico.org/namespace in {'x', 'y'}")
        XCTAssertTrue(selector.matches(["ns-label": "absent"]))
        XCTAssertTrue(selector.matches(["projectcalico.org/namespace": "x"]))
        XCTAssertFalse(selector.matches(["projectcalico.org/namespace": "z"]))
        XCTAssertEqual(try SelectorParser.parse("pod in {'a'}"), .inSet("pod", ["a"]))
        XCTAssertEqual(try SelectorParser.parse("ns == 'z'"), .equals("ns", "z"))
        XCTAssertEqual(try SelectorParser.parse(""), .all)
    }
}

// MARK: - Cases

/// A selector that must parse to `selector`, match every label set in
/// `match` and none in `noMatch`.
fileprivate struct SelectorValidCase: Sendable {
    let text: String
    let selector: Selector
    let match: [[String: String]]
    let noMatch: [[String: String]]
    let roundTrips: Bool

    init(_ text: String, _ selector: Selector, match: [[String: String]] = [], noMatch: [[String: String]] = [],
         roundTrips: Bool = true) {
        self.text = text
        self.selector = selector
        self.match = match
        self.noMatch = noMatch
        self.roundTrips = roundTrips
    }
}

/// A selector that must fail at `position` with a reason containing `reason`.
fileprivate struct SelectorInvalidCase: Sendable {
    let text: String
    let position: Int
    let reason: String

    init(_ text: String, _ position: Int, _ reason: String) {
        self.text = text
        self.position = position
        self.reason = reason
    }
}

fileprivate enum SelectorCases {
    static let empty: [String: String] = [:]

    static let valid: [SelectorValidCase] = [
        // Empty selectors are all().
        .init("", .all, match: [empty, ["a": "b"]]),
        .init("  \t \n ", .all, match: [empty]),
        .init("all()", .all, match: [empty, ["x": "y"]]),
        .init(" all( ) ", .all, match: [empty]),
        // As a label test global() matches everything, as Calico's parser has it.
        .init("global()", .global, match: [empty, ["a": "b"]]),
        // Keys as Calico's tokenizer takes them: up to 512 key characters,
        // Kubernetes label key or not.
        .init("Bad_/x == 'y'", .equals("Bad_/x", "y"), match: [["Bad_/x": "y"]], noMatch: [empty]),
        .init("a/b/c == 'y'", .equals("a/b/c", "y"), noMatch: [empty]),
        .init("-a == 'x' && a- == 'x' && _a in {}", .and(.and(.equals("-a", "x"), .equals("a-", "x")), .inSet("_a", [])), noMatch: [empty]),
        .init("x == 'y' || example.com/ == 'z' || has(/a)", .or(.or(.equals("x", "y"), .equals("example.com/", "z")), .has("/a")),
              match: [["x": "y"]]),
        .init("has(" + String(repeating: "k", count: 512) + ")", .has(String(repeating: "k", count: 512)), noMatch: [empty]),
        // Equality.
        .init("a == 'b'", .equals("a", "b"), match: [["a": "b"], ["a": "b", "c": "d"]],
              noMatch: [empty, ["a": "c"], ["b": "b"], ["a": ""]]),
        .init("a == \"b\"", .equals("a", "b"), match: [["a": "b"]], noMatch: [["a": "B"]]),
        .init("a=='b'", .equals("a", "b"), match: [["a": "b"]]),
        .init("a == ''", .equals("a", ""), match: [["a": ""]], noMatch: [empty, ["a": "x"]]),
        .init("a != 'b'", .notEquals("a", "b"), match: [empty, ["a": "c"], ["a": ""]], noMatch: [["a": "b"]]),
        .init("a!=\"b\"", .notEquals("a", "b"), match: [empty], noMatch: [["a": "b"]]),
        // Sets.
        .init("a in {'x', 'y'}", .inSet("a", ["x", "y"]), match: [["a": "x"], ["a": "y"]],
              noMatch: [empty, ["a": "z"], ["b": "x"]]),
        .init("a in {\"x\",\"y\",}", .inSet("a", ["x", "y"]), match: [["a": "y"]], noMatch: [["a": ""]]),
        .init("a in {'x' , 'y' ,'z'}", .inSet("a", ["x", "y", "z"]), match: [["a": "z"]]),
        .init("a in {'x', 'x'}", .inSet("a", ["x"]), match: [["a": "x"]]),
        .init("a in {}", .inSet("a", []), noMatch: [empty, ["a": ""], ["a": "x"]]),
        .init("a not in {'x'}", .notInSet("a", ["x"]), match: [empty, ["a": "y"]], noMatch: [["a": "x"]]),
        .init("a not    in {'x', 'y'}", .notInSet("a", ["x", "y"]), match: [["a": "z"]], noMatch: [["a": "y"]]),
        .init("a not in {}", .notInSet("a", []), match: [empty, ["a": "x"]]),
        .init("a notin {'x'}", .notInSet("a", ["x"]), match: [empty], noMatch: [["a": "x"]]),
        // has(), negation.
        .init("has(a)", .has("a"), match: [["a": ""], ["a": "x"]], noMatch: [empty, ["b": "a"]]),
        .init("has( app.kubernetes.io/name )", .has("app.kubernetes.io/name"),
              match: [["app.kubernetes.io/name": "web"]], noMatch: [["name": "web"]]),
        .init("!has(a)", .not(.has("a")), match: [empty], noMatch: [["a": ""]]),
        .init("! has(a)", .not(.has("a")), match: [["b": "c"]], noMatch: [["a": "c"]]),
        .init("!!has(a)", .not(.not(.has("a"))), match: [["a": "x"]], noMatch: [empty]),
        .init("!(!(has(a)))", .not(.not(.has("a"))), match: [["a": "x"]], noMatch: [empty]),
        .init("!a == 'x'", .not(.equals("a", "x")), match: [empty, ["a": "y"]], noMatch: [["a": "x"]]),
        // String operators need the label to be present.
        .init("a contains 'bc'", .contains("a", "bc"), match: [["a": "abcd"], ["a": "bc"]],
              noMatch: [empty, ["a": "acb"]]),
        .init("a contains ''", .contains("a", ""), match: [["a": ""], ["a": "q"]], noMatch: [empty]),
        .init("a starts with 'ab'", .startsWith("a", "ab"), match: [["a": "abc"], ["a": "ab"]],
              noMatch: [empty, ["a": "cab"]]),
        .init("a   starts   with   'ab'", .startsWith("a", "ab"), match: [["a": "abc"]]),
        .init("a startswith 'ab'", .startsWith("a", "ab"), match: [["a": "abc"]]),
        .init("a ends with 'bc'", .endsWith("a", "bc"), match: [["a": "abc"]], noMatch: [empty, ["a": "bca"]]),
        .init("a endswith \"bc\"", .endsWith("a", "bc"), match: [["a": "bc"]]),
        // Precedence and associativity: && binds tighter, both nest left.
        .init("a == 'x' && b == 'y'", .and(.equals("a", "x"), .equals("b", "y")),
              match: [["a": "x", "b": "y"]], noMatch: [["a": "x"], ["b": "y"]]),
        .init("a == 'x' || b == 'y'", .or(.equals("a", "x"), .equals("b", "y")),
              match: [["a": "x"], ["b": "y"]], noMatch: [empty, ["a": "y", "b": "x"]]),
        .init("a == 'x' || b == 'y' && c == 'z'",
              .or(.equals("a", "x"), .and(.equals("b", "y"), .equals("c", "z"))),
              match: [["a": "x"], ["b": "y", "c": "z"]], noMatch: [["b": "y"], ["c": "z"]]),
        .init("a == 'x' && b == 'y' || c == 'z'",
              .or(.and(.equals("a", "x"), .equals("b", "y")), .equals("c", "z")),
              match: [["c": "z"], ["a": "x", "b": "y"]], noMatch: [["a": "x"]]),
        .init("(a == 'x' || b == 'y') && c == 'z'",
              .and(.or(.equals("a", "x"), .equals("b", "y")), .equals("c", "z")),
              match: [["a": "x", "c": "z"]], noMatch: [["a": "x"], ["c": "z"]]),
        .init("a == 'x' && b == 'y' && c == 'z'",
              .and(.and(.equals("a", "x"), .equals("b", "y")), .equals("c", "z")),
              match: [["a": "x", "b": "y", "c": "z"]], noMatch: [["a": "x", "b": "y"]]),
        .init("a == 'x' || b == 'y' || c == 'z'",
              .or(.or(.equals("a", "x"), .equals("b", "y")), .equals("c", "z")),
              match: [["c": "z"]], noMatch: [empty]),
        .init("has(a) && has(b) || has(c) && has(d)",
              .or(.and(.has("a"), .has("b")), .and(.has("c"), .has("d"))),
              match: [["a": "", "b": ""], ["c": "", "d": ""]], noMatch: [["a": "", "c": ""]]),
        .init("!(a == 'x' && b == 'y')", .not(.and(.equals("a", "x"), .equals("b", "y"))),
              match: [empty, ["a": "x"]], noMatch: [["a": "x", "b": "y"]]),
        .init("!has(a) && b == 'y'", .and(.not(.has("a")), .equals("b", "y")),
              match: [["b": "y"]], noMatch: [["a": "", "b": "y"]]),
        .init("((a == 'x'))", .equals("a", "x"), match: [["a": "x"]]),
        .init("a != 'x' && a != 'y'", .and(.notEquals("a", "x"), .notEquals("a", "y")),
              match: [empty, ["a": "z"]], noMatch: [["a": "x"], ["a": "y"]]),
        .init("global() || has(a)", .or(.global, .has("a")), match: [["a": "1"], empty]),
        .init("!global() || has(a)", .or(.not(.global), .has("a")), match: [["a": "1"]], noMatch: [empty]),
        .init("all() && !has(a)", .and(.all, .not(.has("a"))), match: [empty], noMatch: [["a": "1"]]),
        .init("a == 'x'\n    && b == 'y'", .and(.equals("a", "x"), .equals("b", "y")),
              match: [["a": "x", "b": "y"]]),
        // The Calico examples.
        .init("ns-label == 'absent' || projectcalico.org/namespace in {'x', 'y'}",
              .or(.equals("ns-label", "absent"), .inSet("projectcalico.org/namespace", ["x", "y"])),
              match: [["ns-label": "absent"], ["projectcalico.org/namespace": "y"]],
              noMatch: [empty, ["ns-label": "present", "projectcalico.org/namespace": "z"]]),
        .init("pod in {'a'}", .inSet("pod", ["a"]), match: [["pod": "a"]], noMatch: [["pod": "b"], empty]),
        .init("ns == 'z'", .equals("ns", "z"), match: [["ns": "z"]], noMatch: [["ns": "y"], empty]),
        // Keys: keywords are only keywords where an operator or '(' says so.
        .init("in == 'x'", .equals("in", "x"), match: [["in": "x"]]),
        .init("has == 'x'", .equals("has", "x"), match: [["has": "x"]]),
        .init("all == 'x'", .equals("all", "x"), match: [["all": "x"]], noMatch: [empty]),
        .init("not in {'x'}", .inSet("not", ["x"]), match: [["not": "x"]]),
        .init("has(has)", .has("has"), match: [["has": ""]]),
        .init("a.b-c_d == 'v'", .equals("a.b-c_d", "v"), match: [["a.b-c_d": "v"]]),
        .init("A_b.C == 'v'", .equals("A_b.C", "v"), match: [["A_b.C": "v"]], noMatch: [["a_b.c": "v"]]),
        .init("example.com/My_Key-1 == 'v'", .equals("example.com/My_Key-1", "v"),
              match: [["example.com/My_Key-1": "v"]]),
        // Values are arbitrary text (no escapes; the other quote is allowed).
        .init("a == \"it's\"", .equals("a", "it's"), match: [["a": "it's"]]),
        .init("a == '\"quoted\"'", .equals("a", "\"quoted\""), match: [["a": "\"quoted\""]]),
        .init("a == 'x y && z'", .equals("a", "x y && z"), match: [["a": "x y && z"]]),
        .init("a == 'é'", .equals("a", "é"), match: [["a": "é"]], noMatch: [["a": "e"]]),
        // A combining mark right after a quote must not hide the quote.
        .init("a == '\u{301}x'", .equals("a", "\u{301}x"), match: [["a": "\u{301}x"]]),
        // Exactly at the nesting limit still parses.
        .init(String(repeating: "(", count: 512) + "has(a)" + String(repeating: ")", count: 512), .has("a"),
              match: [["a": ""]]),
        .init(String(repeating: "(", count: 256) + String(repeating: "!", count: 256) + "has(a)"
                + String(repeating: ")", count: 256),
              (0..<256).reduce(Selector.has("a")) { s, _ in .not(s) }, match: [["a": ""]], noMatch: [empty]),
        // Long chains nest left; 1000 operators is the limit. The canonical
        // description of a 1000-deep tree nests '(' deeper than the parser
        // allows, so that one does not round-trip.
        .init(Array(repeating: "has(a)", count: 500).joined(separator: " && "),
              (1..<500).reduce(Selector.has("a")) { s, _ in .and(s, .has("a")) }, match: [["a": ""]]),
        .init(Array(repeating: "has(a)", count: 1001).joined(separator: " && "),
              (1..<1001).reduce(Selector.has("a")) { s, _ in .and(s, .has("a")) }, match: [["a": ""]],
              roundTrips: false),
    ]

    static let invalid: [SelectorInvalidCase] = [
        .init("a = 'b'", 2, "unknown operator '='; use '=='"),
        .init("a === 'b'", 2, "unknown operator '==='"),
        .init("a !== 'b'", 2, "unknown operator '!=='"),
        .init("a & b", 2, "unknown operator '&'; use '&&'"),
        .init("a == 'b' | c", 9, "unknown operator '|'; use '||'"),
        .init("a like 'x'", 2, "unknown operator 'like' after label key 'a'"),
        .init("a == 'b", 5, "unterminated string"),
        .init("a == \"b", 5, "unterminated string"),
        .init("a in {'x', 'y", 11, "unterminated string"),
        .init("a ==", 4, "expected a quoted string after '==' but reached the end of the selector"),
        .init("app == web", 7, "expected a quoted string after '=='"),
        .init("a != {'x'}", 5, "expected a quoted string after '!='"),
        .init("a contains", 10, "expected a quoted string after 'contains'"),
        .init("a == 'b' &&", 11, "after '&&' but reached the end of the selector"),
        .init("a == 'b' || ", 12, "after '||' but reached the end of the selector"),
        .init("&& a == 'b'", 0, "expected a label key, has(), all(), global(), '!' or '(' but found '&&'"),
        .init("!", 1, "after '!' but reached the end"),
        .init("()", 1, "after '(' but found ')'"),
        .init("a == 'b' && (c == 'd' || )", 25, "after '||' but found ')'"),
        .init("(a == 'b'", 9, "to close the '(' at position 0 but reached the end"),
        .init("((a == 'b')", 11, "to close the '(' at position 0"),
        .init("(a == 'b' c)", 10, "expected '&&', '||' or ')' to close the '(' at position 0 but found 'c'"),
        .init("a == 'b')", 8, "unexpected ')' with no matching '('"),
        .init("has(a))", 6, "unexpected ')'"),
        .init("a in {'x'", 9, "to close the set at position 5 but reached the end"),
        .init("a in {'x' 'y'}", 10, "expected ',' or '}'"),
        .init("a in {'x'}}", 10, "expected '&&', '||' or the end of the selector but found '}'"),
        .init("a in {,}", 6, "expected a quoted string or '}'"),
        .init("a in {'x',,}", 10, "expected a quoted string or '}'"),
        .init("a in {x}", 6, "expected a quoted string or '}' to close the set at position 5 but found 'x'"),
        .init("a in 'x'", 5, "expected '{' after 'in'"),
        .init("a not in 'x'", 9, "expected '{' after 'not in'"),
        .init("a not {'x'}", 6, "expected 'in' after 'not'"),
        .init("a not", 5, "expected 'in' after 'not' but reached the end"),
        .init("a starts 'x'", 9, "expected 'with' after 'starts'"),
        .init("a ends", 6, "expected 'with' after 'ends'"),
        .init("a == 'b' c == 'd'", 9, "expected '&&', '||' or the end of the selector but found 'c'"),
        .init("a", 1, "expected an operator (==, !=, in, not in, contains, starts with, ends with) after label key 'a'"),
        .init("all", 3, "after label key 'all' but reached the end"),
        .init("a 'b'", 2, "expected an operator"),
        .init("has(a", 5, "expected ')' to close 'has('"),
        .init("has(a b)", 6, "expected ')' to close 'has(' but found 'b'"),
        .init("has()", 4, "expected an unquoted label key in has() but found ')'"),
        .init("has('a')", 4, "expected an unquoted label key in has()"),
        .init("all(a)", 4, "expected ')' after 'all('"),
        .init("global(", 7, "expected ')' after 'global('"),
        .init("foo(a)", 0, "unknown function 'foo()'"),
        .init("{'a'}", 0, "expected a label key"),
        .init("'a' == b", 0, "expected a label key, has(), all(), global(), '!' or '(' but found the string 'a'"),
        .init("a == 'b' $", 9, "unexpected character '$'"),
        .init("a:b == 'x'", 1, "unexpected character ':'"),
        .init("kä == 'x'", 1, "unexpected character 'ä'"),
        // Bad keys, reported at the key.
        .init(String(repeating: "k", count: 513) + " == 'y'", 0, "invalid label key: longer than 512 characters"),
        .init("has(" + String(repeating: "k", count: 513) + ")", 4, "invalid label key: longer than 512 characters"),
        // Nesting is bounded.
        .init(String(repeating: "(", count: 600) + "has(a)" + String(repeating: ")", count: 600), 512,
              "more than 512 deep"),
        .init(String(repeating: "!", count: 600) + "has(a)", 512, "more than 512 deep"),
        .init(String(repeating: "(", count: 256) + "!(" + String(repeating: "!", count: 300) + "has(a)", 512,
              "more than 512 deep"),
        // The 1001st operator: the 1001st '&&' (at 8k - 2), or the 501st '!' (at 9 * 500).
        .init(Array(repeating: "has(a)", count: 1002).joined(separator: "&&"), 8 * 1001 - 2,
              "more than 1000 '&&', '||' and '!' operators"),
        .init(Array(repeating: "!has(a)", count: 501).joined(separator: "||"), 9 * 500,
              "more than 1000 '&&', '||' and '!' operators"),
    ]

    /// Hand-built selectors whose canonical description must parse back.
    static let roundTrip: [Selector] = [
        .all, .global, .has("app.kubernetes.io/name"), .not(.has("a")), .not(.not(.all)),
        .equals("a", "it's"), .equals("a", "\"q\""), .equals("a", ""), .notEquals("projectcalico.org/namespace", "x y"),
        .inSet("a", []), .inSet("a", ["z", "y", "x", "it's"]), .notInSet("a", []), .notInSet("a", ["1", "2"]),
        .contains("a", ""), .startsWith("a", "-"), .endsWith("a", "'"),
        .and(.all, .and(.has("a"), .has("b"))), .or(.has("a"), .or(.has("b"), .has("c"))),
        .and(.or(.has("a"), .has("b")), .not(.or(.global, .equals("c", "d")))),
        Selector.allOf((0..<50).map { .equals("k\($0)", "v\($0)") }),
    ]
}

// MARK: - Checks

/// Valid cases: parse result, matching, and round trip. Returns the number of checks.
fileprivate func checkValidSelectorCases(fail: (String) -> Void) -> Int {
    var checks = 0
    for c in SelectorCases.valid {
        checks += 1
        let parsed: Selector
        do {
            parsed = try SelectorParser.parse(c.text)
        } catch {
            fail("\(debugQuote(c.text)) did not parse: \(error)")
            continue
        }
        if parsed != c.selector { fail("\(debugQuote(c.text)) parsed to \(parsed), expected \(c.selector)") }
        for labels in c.match {
            checks += 1
            if !parsed.matches(labels) { fail("\(debugQuote(c.text)) should match \(labels)") }
        }
        for labels in c.noMatch {
            checks += 1
            if parsed.matches(labels) { fail("\(debugQuote(c.text)) should not match \(labels)") }
        }
        checks += 1
        if c.roundTrips, (try? SelectorParser.parse(parsed.description)) != parsed {
            fail("\(debugQuote(c.text)): description \(debugQuote(parsed.description)) does not parse back")
        }
    }
    return checks
}

fileprivate func checkInvalidSelectorCases(fail: (String) -> Void) -> Int {
    for c in SelectorCases.invalid {
        do {
            let parsed = try SelectorParser.parse(c.text)
            fail("\(debugQuote(c.text)) should not parse but gave \(parsed)")
        } catch {
            if error.position != c.position || !error.reason.contains(c.reason) {
                fail("\(debugQuote(c.text)) failed with '\(error)', expected position \(c.position) and '\(c.reason)'")
            }
            if error.description != "at position \(error.position): \(error.reason)" {
                fail("bad description format: \(error.description)")
            }
        }
    }
    return SelectorCases.invalid.count
}

/// Hand-built and pseudo-random selectors: `parse(s.description) == s`.
fileprivate func checkSelectorRoundTrips(fail: (String) -> Void) -> Int {
    var generator = SelectorTestRNG(seed: 0x5EED)
    let generated = (0..<500).map { _ in randomTestSelector(depth: 4, using: &generator) }
    for selector in SelectorCases.roundTrip + generated {
        do {
            let reparsed = try SelectorParser.parse(selector.description)
            if reparsed != selector { fail("\(selector) reparsed as \(reparsed)") }
        } catch {
            fail("\(debugQuote(selector.description)) does not parse: \(error)")
        }
    }
    return SelectorCases.roundTrip.count + generated.count
}

fileprivate func checkLabelValidationCases(fail: (String) -> Void) -> Int {
    let validKeys = [
        "a", "A", "pod", "ns-label", "app.kubernetes.io/name", "projectcalico.org/namespace", "a-b_c.d", "9",
        "example.com/A_b", String(repeating: "n", count: 63), String(repeating: "p", count: 253) + "/n",
        "a.b-c.d/x",
    ]
    let invalidKeys: [(String, String)] = [
        ("", "name part must be non-empty"), ("/a", "prefix part must be non-empty"),
        ("a/", "name part must be non-empty"), ("-a", "name part must consist"), ("a-", "name part must consist"),
        ("_a", "name part must consist"), ("a b", "name part must consist"), ("é", "name part must consist"),
        ("A.com/x", "prefix part must be a DNS-1123"), ("a..b/x", "prefix part must be a DNS-1123"),
        ("a.-b/x", "prefix part must be a DNS-1123"), ("-a.b/x", "prefix part must be a DNS-1123"),
        ("a_b.com/x", "prefix part must be a DNS-1123"), ("a/b/c", "at most one '/'"),
        (String(repeating: "n", count: 64), "63 characters or less"),
        (String(repeating: "p", count: 254) + "/n", "253 characters or less"),
    ]
    let validValues = ["", "a", "A", "a.b-c_d", "0", String(repeating: "v", count: 63)]
    let invalidValues = ["-a", "a-", ".a", "a b", "é", "a/b", String(repeating: "v", count: 64)]
    for key in validKeys where LabelValidation.validateKey(key) != nil {
        fail("key \(debugQuote(key)) should be valid: \(LabelValidation.validateKey(key) ?? "")")
    }
    for (key, reason) in invalidKeys {
        let problem = LabelValidation.validateKey(key)
        if !(problem?.contains(reason) ?? false) {
            fail("key \(debugQuote(key)) should be invalid with '\(reason)', got \(problem ?? "valid")")
        }
    }
    for value in validValues where LabelValidation.validateValue(value) != nil {
        fail("value \(debugQuote(value)) should be valid")
    }
    for value in invalidValues where LabelValidation.validateValue(value) == nil {
        fail("value \(debugQuote(value)) should be invalid")
    }
    return validKeys.count + invalidKeys.count + validValues.count + invalidValues.count
}

private func debugQuote(_ s: String) -> String { s.debugDescription }

/// Deterministic generator so failures reproduce.
fileprivate struct SelectorTestRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

fileprivate func randomTestSelector(depth: Int, using g: inout SelectorTestRNG) -> Selector {
    let keys = ["a", "in", "has", "all", "app.kubernetes.io/name", "projectcalico.org/namespace", "K_1.x-y"]
    let values = ["", "x", "it's", "\"q\"", "a b", "&&", "é", "{}", "()"]
    let key = keys.randomElement(using: &g)!
    let value = values.randomElement(using: &g)!
    let set = Set(values.filter { _ in Bool.random(using: &g) })
    let leaves: [Selector] = [
        .all, .global, .equals(key, value), .notEquals(key, value), .inSet(key, set), .notInSet(key, set),
        .has(key), .contains(key, value), .startsWith(key, value), .endsWith(key, value),
    ]
    if depth == 0 || Int.random(in: 0..<3, using: &g) == 0 { return leaves.randomElement(using: &g)! }
    switch Int.random(in: 0..<3, using: &g) {
    case 0: return .not(randomTestSelector(depth: depth - 1, using: &g))
    case 1: return .and(randomTestSelector(depth: depth - 1, using: &g), randomTestSelector(depth: depth - 1, using: &g))
    default: return .or(randomTestSelector(depth: depth - 1, using: &g), randomTestSelector(depth: depth - 1, using: &g))
    }
}
