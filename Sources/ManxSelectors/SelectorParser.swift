/// Parses the Calico selector language into a `Selector`.
///
/// Grammar (`&&` binds tighter than `||`; both associate to the left):
///
///     selector   := <empty> | or
///     or         := and ('||' and)*
///     and        := unary ('&&' unary)*
///     unary      := '!' unary | primary
///     primary    := '(' or ')' | 'has' '(' key ')' | 'all' '(' ')' | 'global' '(' ')'
///                 | key ('==' | '!=' | 'contains' | 'starts' 'with' | 'ends' 'with') string
///                 | key ('in' | 'not' 'in') '{' [string (',' string)* [',']] '}'
///     string     := '...' | "..."       (no escapes, as in Calico)
///
/// Label keys are what Calico's tokenizer takes: 1 to 512 of `[A-Za-z0-9_./-]`.
/// Beyond Calico, this accepts newlines as whitespace and reports every
/// error with its position.
public enum SelectorParser {
    /// Parses `text`; an empty or all-whitespace text is `all()`, as in Calico.
    public static func parse(_ text: String) throws(SelectorParseError) -> Selector {
        var parser = Parser(text)
        return try parser.parseSelector()
    }

    // Limits that keep a hostile selector from exhausting a thread stack.
    // Parsing recurses once per '(' or '!': about 2.7 KB of stack per level
    // in a debug build, about 200 bytes optimized. `matches`, `description`,
    // `==` and deinit recurse once per level of the resulting tree, which is
    // at most one deeper than the number of '&&', '||' and '!' operators.
    // Canonical descriptions nest one '(' per and/or/not, so trees up to
    // about `maxNesting` deep still round-trip.

    /// Parentheses and `!` nest at most this deep.
    public static let maxNesting = 512
    /// A selector has at most this many `&&`, `||` and `!` operators.
    public static let maxOperators = 1000
    /// A label key in a selector is at most this long, as in Calico.
    public static let maxKeyLength = 512
}

/// Why a selector did not parse, and where.
public struct SelectorParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 0-based offset into the text, counted in Unicode scalars (the same
    /// as characters for the ASCII that selectors are normally written in).
    public let position: Int
    public let reason: String

    public init(position: Int, reason: String) {
        self.position = position
        self.reason = reason
    }

    public var description: String { "at position \(position): \(reason)" }
}

// MARK: - Lexer

private struct Token {
    enum Kind: Equatable {
        /// A run of label-key characters: a key, or a keyword such as `in`,
        /// `has` or `starts`. Keywords are only keywords where the grammar
        /// expects them, so labels named `in` or `has` still work.
        case word(String)
        case string(String)
        case lparen, rparen, lbrace, rbrace, comma
        case eq, ne, not, and, or
        case end
    }

    let kind: Kind
    let position: Int

    /// How error messages refer to this token.
    var text: String {
        switch kind {
        case let .word(w): return "'\(w)'"
        case let .string(s): return s.contains("'") ? "the string \"\(s)\"" : "the string '\(s)'"
        case .lparen: return "'('"
        case .rparen: return "')'"
        case .lbrace: return "'{'"
        case .rbrace: return "'}'"
        case .comma: return "','"
        case .eq: return "'=='"
        case .ne: return "'!='"
        case .not: return "'!'"
        case .and: return "'&&'"
        case .or: return "'||'"
        case .end: return "the end of the selector"
        }
    }
}

/// Produces tokens on demand rather than up front, so that the first error
/// reported is the leftmost one whether it is lexical or grammatical.
private struct Lexer {
    // Unicode scalars rather than Characters: a combining mark after a quote
    // would otherwise fuse with it into one Character and hide the quote.
    private let scalars: [Unicode.Scalar]
    private var index = 0

    init(_ text: String) { scalars = Array(text.unicodeScalars) }

    mutating func next() throws(SelectorParseError) -> Token {
        while index < scalars.count, Self.isSpace(scalars[index]) { index += 1 }
        let start = index
        guard index < scalars.count else { return Token(kind: .end, position: start) }
        let c = scalars[index]
        index += 1
        func token(_ kind: Token.Kind, length: Int = 1) -> Token {
            index = start + length
            return Token(kind: kind, position: start)
        }
        func peek(_ offset: Int) -> Unicode.Scalar? {
            start + offset < scalars.count ? scalars[start + offset] : nil
        }
        func failure(_ reason: String) -> SelectorParseError {
            SelectorParseError(position: start, reason: reason)
        }
        switch c {
        case "(": return token(.lparen)
        case ")": return token(.rparen)
        case "{": return token(.lbrace)
        case "}": return token(.rbrace)
        case ",": return token(.comma)
        case "'", "\"":
            // Calico strings have no escapes: the text runs to the next
            // matching quote, so a value can hold the other kind of quote.
            guard let close = scalars[index...].firstIndex(of: c) else {
                throw failure("unterminated string: no closing \(c) found")
            }
            index = close + 1
            return Token(kind: .string(text(start + 1, close)), position: start)
        case "=":
            // Count the run so `=` and `===` get one clear message each,
            // instead of `===` lexing as `==` followed by a stray `=`.
            var end = index
            while end < scalars.count, scalars[end] == "=" { end += 1 }
            if end - start == 2 { return token(.eq, length: 2) }
            let run = String(repeating: "=", count: end - start)
            throw failure("unknown operator '\(run)'; use '==' to compare")
        case "!":
            guard peek(1) == "=" else { return token(.not) }
            if peek(2) == "=" {
                throw failure("unknown operator '!=='; use '!='")
            }
            return token(.ne, length: 2)
        case "&", "|":
            guard peek(1) == c else {
                throw failure("unknown operator '\(c)'; use '\(c)\(c)'")
            }
            return token(c == "&" ? .and : .or, length: 2)
        default:
            guard Self.isWordScalar(c) else {
                throw failure("unexpected character '\(c.escaped(asASCII: false))'")
            }
            while index < scalars.count, Self.isWordScalar(scalars[index]) { index += 1 }
            return Token(kind: .word(text(start, index)), position: start)
        }
    }

    private func text(_ from: Int, _ to: Int) -> String {
        String(String.UnicodeScalarView(scalars[from..<to]))
    }

    /// Calico skips spaces and tabs; newlines are allowed too because YAML
    /// block scalars (`selector: |`) keep them.
    private static func isSpace(_ c: Unicode.Scalar) -> Bool {
        c == " " || c == "\t" || c == "\n" || c == "\r"
    }

    /// Calico's label alphabet `[A-Za-z0-9_./-]`. It is wider than what
    /// Kubernetes accepts; the parser validates whole keys afterwards so it
    /// can say what is wrong with them.
    private static func isWordScalar(_ c: Unicode.Scalar) -> Bool {
        switch c {
        case "a"..."z", "A"..."Z", "0"..."9", "_", ".", "/", "-": return true
        default: return false
        }
    }
}

// MARK: - Parser

/// Recursive descent with one token of lookahead (`token`).
private struct Parser {
    private var lexer: Lexer
    private var token = Token(kind: .end, position: 0)
    private var depth = 0
    private var operators = 0

    init(_ text: String) { lexer = Lexer(text) }

    mutating func parseSelector() throws(SelectorParseError) -> Selector {
        try advance()
        if token.kind == .end { return .all }
        let selector = try parseOr(after: nil)
        switch token.kind {
        case .end: return selector
        case .rparen: throw error("unexpected ')' with no matching '('")
        default: throw unexpected("expected '&&', '||' or the end of the selector")
        }
    }

    private mutating func advance() throws(SelectorParseError) {
        token = try lexer.next()
    }

    private func error(_ reason: String, at position: Int? = nil) -> SelectorParseError {
        SelectorParseError(position: position ?? token.position, reason: reason)
    }

    /// "expected X but found Y", at the offending token.
    private func unexpected(_ expected: String) -> SelectorParseError {
        let found = token.kind == .end ? "reached the end of the selector" : "found \(token.text)"
        return error("\(expected) but \(found)")
    }

    // Chains are built left-nested, `a && b && c` as `(a && b) && c`, which
    // is also how `Selector.allOf` nests them.
    private mutating func parseOr(after: String?) throws(SelectorParseError) -> Selector {
        var result = try parseAnd(after: after)
        while token.kind == .or {
            try countOperator()
            result = .or(result, try parseAnd(after: "'||'"))
        }
        return result
    }

    private mutating func parseAnd(after: String?) throws(SelectorParseError) -> Selector {
        var result = try parseUnary(after: after)
        while token.kind == .and {
            try countOperator()
            result = .and(result, try parseUnary(after: "'&&'"))
        }
        return result
    }

    /// `after` names the token before this operand, for "missing operand"
    /// errors such as "expected a label key, ... after '&&'".
    private mutating func parseUnary(after: String?) throws(SelectorParseError) -> Selector {
        // `!!x` stays two nodes (Calico folds them): `!(!(x))` must parse
        // back to the selector it was printed from.
        guard token.kind == .not else { return try parsePrimary(after: after) }
        try enterNesting()
        defer { depth -= 1 }
        try countOperator()
        return .not(try parseUnary(after: "'!'"))
    }

    /// Counts the operator at `token` and moves past it.
    private mutating func countOperator() throws(SelectorParseError) {
        operators += 1
        if operators > SelectorParser.maxOperators {
            throw error("selector has more than \(SelectorParser.maxOperators) '&&', '||' and '!' operators")
        }
        try advance()
    }

    private mutating func enterNesting() throws(SelectorParseError) {
        depth += 1
        if depth > SelectorParser.maxNesting {
            throw error("selector nests '(' and '!' more than \(SelectorParser.maxNesting) deep")
        }
    }

    private mutating func parsePrimary(after: String?) throws(SelectorParseError) -> Selector {
        let start = token
        switch start.kind {
        case .lparen:
            try enterNesting()
            defer { depth -= 1 }
            try advance()
            let inner = try parseOr(after: "'('")
            guard token.kind == .rparen else {
                throw unexpected("expected '&&', '||' or ')' to close the '(' at position \(start.position)")
            }
            try advance()
            return inner
        case let .word(word):
            try advance()
            if token.kind == .lparen {
                return try parseFunction(word, at: start.position)
            }
            try validateKey(word, at: start.position)
            return try parseComparison(key: word)
        default:
            let context = after.map { " after \($0)" } ?? ""
            throw unexpected("expected a label key, has(), all(), global(), '!' or '('\(context)")
        }
    }

    /// `has(key)`, `all()` and `global()`; `token` is the '('. As in Calico,
    /// a word is only a function when followed by '(' so `all` and `has`
    /// remain usable as label keys.
    private mutating func parseFunction(_ name: String, at position: Int) throws(SelectorParseError) -> Selector {
        try advance()
        switch name {
        case "has":
            guard case let .word(key) = token.kind else {
                throw unexpected("expected an unquoted label key in has()")
            }
            try validateKey(key, at: token.position)
            try advance()
            guard token.kind == .rparen else { throw unexpected("expected ')' to close 'has('") }
            try advance()
            return .has(key)
        case "all", "global":
            guard token.kind == .rparen else { throw unexpected("expected ')' after '\(name)('") }
            try advance()
            return name == "all" ? .all : .global
        default:
            throw error("unknown function '\(name)()'; expected has(), all() or global()", at: position)
        }
    }

    /// Calico's tokenizer takes any run of 1 to 512 key characters as a
    /// label key, as Manx does: a key no label can have (labels are
    /// Kubernetes label keys) matches nothing, and rejects no batch.
    private func validateKey(_ key: String, at position: Int) throws(SelectorParseError) {
        if key.unicodeScalars.count > SelectorParser.maxKeyLength {
            throw error("invalid label key: longer than \(SelectorParser.maxKeyLength) characters", at: position)
        }
    }

    /// The operator and operand after a label key.
    private mutating func parseComparison(key: String) throws(SelectorParseError) -> Selector {
        // Calico's tokenizer also accepts the two-word operators without the
        // space (`notin`, `startswith`), so existing selectors may use them.
        switch token.kind {
        case .eq: try advance(); return .equals(key, try parseString(after: "'=='"))
        case .ne: try advance(); return .notEquals(key, try parseString(after: "'!='"))
        case .word("in"): try advance(); return .inSet(key, try parseSet(after: "'in'"))
        case .word("notin"): try advance(); return .notInSet(key, try parseSet(after: "'not in'"))
        case .word("not"):
            try advance()
            guard token.kind == .word("in") else { throw unexpected("expected 'in' after 'not'") }
            try advance()
            return .notInSet(key, try parseSet(after: "'not in'"))
        case .word("contains"): try advance(); return .contains(key, try parseString(after: "'contains'"))
        case .word("startswith"):
            try advance()
            return .startsWith(key, try parseString(after: "'starts with'"))
        case .word("endswith"):
            try advance()
            return .endsWith(key, try parseString(after: "'ends with'"))
        case .word("starts"):
            try expectWith(after: "starts")
            return .startsWith(key, try parseString(after: "'starts with'"))
        case .word("ends"):
            try expectWith(after: "ends")
            return .endsWith(key, try parseString(after: "'ends with'"))
        case let .word(other):
            throw error("unknown operator '\(other)' after label key '\(key)'; expected ==, !=, in, not in, "
                + "contains, starts with or ends with")
        default:
            throw unexpected("expected an operator (==, !=, in, not in, contains, starts with, ends with) "
                + "after label key '\(key)'")
        }
    }

    private mutating func expectWith(after word: String) throws(SelectorParseError) {
        try advance()
        guard token.kind == .word("with") else { throw unexpected("expected 'with' after '\(word)'") }
        try advance()
    }

    private mutating func parseString(after op: String) throws(SelectorParseError) -> String {
        guard case let .string(value) = token.kind else {
            throw unexpected("expected a quoted string after \(op)")
        }
        try advance()
        return value
    }

    /// `{'a', "b"}`; empty sets and a trailing comma are allowed, as in Calico.
    private mutating func parseSet(after op: String) throws(SelectorParseError) -> Set<String> {
        guard token.kind == .lbrace else { throw unexpected("expected '{' after \(op)") }
        let open = token.position
        try advance()
        var values = Set<String>()
        while true {
            switch token.kind {
            case .rbrace:
                try advance()
                return values
            case let .string(value):
                values.insert(value)
                try advance()
                switch token.kind {
                case .comma: try advance()
                case .rbrace: continue
                default: throw unexpected("expected ',' or '}' to close the set at position \(open)")
                }
            default:
                throw unexpected("expected a quoted string or '}' to close the set at position \(open)")
            }
        }
    }
}
