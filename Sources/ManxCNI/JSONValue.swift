import Foundation

/// A JSON value with its exact type (a boolean is never a number), for
/// configurations whose unknown fields must pass through untouched.
public enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// Compact JSON, keys sorted, slashes unescaped.
    public var text: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(self) else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }

    /// Parses JSON text; the error names what is wrong and where.
    public static func parse(_ text: String) -> Result<JSONValue, ParseError> {
        let data = Data(text.utf8)
        if text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return .failure(ParseError(reason: "it is empty")) }
        // Foundation's parser says where the syntax breaks; the typed decode
        // below keeps booleans and numbers apart.
        do {
            _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            return .failure(ParseError(reason: Self.reason(error, text: text)))
        }
        do {
            return .success(try JSONDecoder().decode(JSONValue.self, from: data))
        } catch {
            return .failure(ParseError(reason: "\(error)"))
        }
    }

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public var reason: String
        public var description: String { reason }
    }

    /// "Invalid value around character 12." becomes "invalid value at line 2, column 3".
    static func reason(_ error: Error, text: String) -> String {
        let ns = error as NSError
        var reason = (ns.userInfo[NSDebugDescriptionErrorKey] as? String) ?? ns.localizedDescription
        if reason.hasSuffix(".") { reason.removeLast() }
        if let range = reason.range(of: #"around character (\d+)"#, options: .regularExpression) {
            let digits = reason[range].split(separator: " ").last.flatMap { Int($0) } ?? 0
            var line = 1, column = 1
            for (i, byte) in text.utf8.enumerated() where i < digits {
                if byte == UInt8(ascii: "\n") { line += 1; column = 1 } else { column += 1 }
            }
            reason.replaceSubrange(range, with: "at line \(line), column \(column)")
        }
        return reason.prefix(1).lowercased() + reason.dropFirst()
    }

    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }

    /// "a string", "a number"...: for messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "a list"
        case .object: return "an object"
        }
    }

    public subscript(key: String) -> JSONValue? { objectValue?[key] }
}
