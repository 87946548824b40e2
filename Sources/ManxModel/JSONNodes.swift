import Yams

/// A reader for the JSON that keyed datastores hold (etcd values, written
/// by `bpfctl apply`), giving the very nodes Yams' parser gives for the
/// same text, at a fraction of the cost: no libyaml events, no duplicate
/// check by hashing whole nodes (a quarter of decoding a snapshot of 10k
/// policies).
///
/// It accepts a strict subset of what YAML reads the same way: one object
/// on one line, ASCII, no tabs, no `\/` or `\u` escapes, keys unique,
/// shorter than YAML's implicit-key limit and right before their colon
/// (as `bpfctl apply` and other JSON encoders write it). Anything else is
/// `nil`, and the caller parses the text as YAML, which also reports its
/// errors, so what is accepted and what each error says do not depend on
/// this reader.
enum JSONNodes {
    static func parse(_ text: String) -> Node? {
        var text = text
        return text.withUTF8 { bytes in
            var reader = Reader(bytes: bytes)
            reader.skipSpace(newlines: true)
            guard reader.next == UInt8(ascii: "{"), let node = reader.value(depth: 0) else { return nil }
            reader.skipSpace(newlines: true)
            return reader.at == bytes.count ? node : nil
        }
    }

    private struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var at = 0
        // Each kind's tag as Yams gives it (the basic resolver resolves
        // every node of a kind alike, so one instance per kind serves a
        // parse; a quoted scalar is tagged a string by the parser). A tag
        // resolves in place, so tags are not shared between parses; their
        // constructor is, built once: `Constructor.default` builds a new
        // one, with its three maps, on every call (a fifth of a parse).
        let scalarTag = Tag(.implicit, .basic, Reader.constructor)
        let quotedTag = Tag(.str, .basic, Reader.constructor)
        let mappingTag = Tag(.implicit, .basic, Reader.constructor)
        let sequenceTag = Tag(.implicit, .basic, Reader.constructor)
        /// Immutable (its maps are `let`s), so safe to share between threads.
        nonisolated(unsafe) static let constructor = Constructor()

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        var next: UInt8? { at < bytes.count ? bytes[at] : nil }

        /// Spaces; newlines only around the value (a flow collection over
        /// several lines has indentation rules of its own in YAML).
        mutating func skipSpace(newlines: Bool = false) {
            while let c = next, c == 0x20 || (newlines && (c == 0x0a || c == 0x0d)) { at += 1 }
        }

        mutating func value(depth: Int) -> Node? {
            // Deeper than any resource: leave it to the YAML parser.
            guard depth < 64 else { return nil }
            skipSpace()
            guard let c = next else { return nil }
            switch c {
            case UInt8(ascii: "{"): return object(depth: depth)
            case UInt8(ascii: "["): return array(depth: depth)
            case UInt8(ascii: "\""): return string().map { .scalar(.init($0, quotedTag, .doubleQuoted)) }
            default: return plain()
            }
        }

        mutating func object(depth: Int) -> Node? {
            at += 1
            var pairs: [(Node, Node)] = []
            // Objects have a handful of keys, where a scan beats hashing;
            // a large one (anything may be written) is checked by a set.
            var keys: [String] = []
            var keySet: Set<String>?
            func isNew(_ key: String) -> Bool {
                if keySet != nil { return keySet!.insert(key).inserted }
                guard !keys.contains(key) else { return false }
                keys.append(key)
                if keys.count == 16 { keySet = Set(keys) }
                return true
            }
            skipSpace()
            if next == UInt8(ascii: "}") {
                at += 1
                return .mapping(.init(pairs, mappingTag, .any))
            }
            while true {
                skipSpace()
                let start = at
                guard next == UInt8(ascii: "\""), let key = string(), at - start < 1000, isNew(key),
                      next == UInt8(ascii: ":") else { return nil }
                at += 1
                guard let value = value(depth: depth + 1) else { return nil }
                pairs.append((.scalar(.init(key, quotedTag, .doubleQuoted)), value))
                skipSpace()
                switch next {
                case UInt8(ascii: ","): at += 1
                case UInt8(ascii: "}"):
                    at += 1
                    return .mapping(.init(pairs, mappingTag, .any))
                default: return nil
                }
            }
        }

        mutating func array(depth: Int) -> Node? {
            at += 1
            var items: [Node] = []
            skipSpace()
            if next == UInt8(ascii: "]") {
                at += 1
                return .sequence(.init(items, sequenceTag, .any))
            }
            while true {
                guard let item = value(depth: depth + 1) else { return nil }
                items.append(item)
                skipSpace()
                switch next {
                case UInt8(ascii: ","): at += 1
                case UInt8(ascii: "]"):
                    at += 1
                    return .sequence(.init(items, sequenceTag, .any))
                default: return nil
                }
            }
        }

        /// A string at `at` (its opening quote), unescaped.
        mutating func string() -> String? {
            at += 1
            var unescaped: [UInt8]?
            let start = at
            while let c = next {
                switch c {
                case UInt8(ascii: "\""):
                    let text = unescaped.map { String(decoding: $0, as: UTF8.self) }
                        ?? String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self)
                    at += 1
                    return text
                case UInt8(ascii: "\\"):
                    if unescaped == nil { unescaped = Array(bytes[start..<at]) }
                    at += 1
                    guard let e = next, let byte = Self.escapes[e] else { return nil }
                    unescaped!.append(byte)
                    at += 1
                case 0x20..<0x7f:
                    unescaped?.append(c)
                    at += 1
                default:
                    return nil // control characters, tabs, non-ASCII
                }
            }
            return nil
        }

        static let escapes: [UInt8: UInt8] = [
            UInt8(ascii: "\""): UInt8(ascii: "\""), UInt8(ascii: "\\"): UInt8(ascii: "\\"),
            UInt8(ascii: "b"): 0x08, UInt8(ascii: "f"): 0x0c, UInt8(ascii: "n"): 0x0a,
            UInt8(ascii: "r"): 0x0d, UInt8(ascii: "t"): 0x09,
        ]

        /// `true`, `false`, `null` or a number, as the plain scalar YAML reads.
        mutating func plain() -> Node? {
            let start = at
            for word in ["true", "false", "null"] where matches(word) {
                at += word.utf8.count
                return .scalar(.init(word, scalarTag, .plain))
            }
            // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
            func digits() -> Int {
                let from = at
                while let c = next, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) { at += 1 }
                return at - from
            }
            if next == UInt8(ascii: "-") { at += 1 }
            let leadingZero = next == UInt8(ascii: "0")
            let integer = digits()
            guard integer > 0, !(leadingZero && integer > 1) else { return nil }
            if next == UInt8(ascii: ".") {
                at += 1
                guard digits() > 0 else { return nil }
            }
            if next == UInt8(ascii: "e") || next == UInt8(ascii: "E") {
                at += 1
                if next == UInt8(ascii: "+") || next == UInt8(ascii: "-") { at += 1 }
                guard digits() > 0 else { return nil }
            }
            // A number ends where a flow scalar does.
            if let end = next, !Self.ends.contains(end) { return nil }
            return literal(start)
        }

        static let ends: Set<UInt8> = [0x20, 0x0a, 0x0d, UInt8(ascii: ","), UInt8(ascii: "]"), UInt8(ascii: "}")]

        func literal(_ start: Int) -> Node {
            .scalar(.init(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<at]), as: UTF8.self), scalarTag, .plain))
        }

        /// `word` at `at`, ending there (`trueish` is no JSON token).
        func matches(_ word: String) -> Bool {
            let w = Array(word.utf8)
            guard at + w.count <= bytes.count, bytes[at..<at + w.count].elementsEqual(w) else { return false }
            return at + w.count == bytes.count || Self.ends.contains(bytes[at + w.count])
        }
    }
}
