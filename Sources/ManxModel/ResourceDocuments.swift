import Foundation
import Yams

/// One validated document of a file, ready to be stored under its own key.
public struct ResourceDocument: Sendable, Equatable {
    public var header: ResourceHeader
    /// The document as JSON (sorted keys), read back exactly as written.
    public var json: String
}

extension ResourceSet {
    /// Validates every document of a file, as the daemon would, and returns
    /// each as JSON. Any error rejects the whole file, with every error.
    public static func documents(file: String, text: String) throws(ValidationErrors) -> [ResourceDocument] {
        let decoded = decodeFile(name: file, text: text)
        if !decoded.errors.isEmpty { throw ValidationErrors(decoded.errors) }
        guard let nodes = try? parseDocuments(text), nodes.count == decoded.headers.count else {
            throw ValidationErrors([ValidationError(file: file, resource: "", field: "", reason: "cannot split the file into documents")])
        }
        return zip(decoded.headers, nodes).map { header, node in
            let data = (try? JSONSerialization.data(withJSONObject: jsonValue(node), options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            return ResourceDocument(header: header, json: String(decoding: data, as: UTF8.self))
        }
    }

    /// A document `documents` gave, as block YAML (what `bpfctl get -o yaml`
    /// prints; it decodes to the same resource).
    public static func yaml(ofJSON json: String) throws -> String {
        guard let node = try parseDocuments(json).first else { return "" }
        return try Yams.serialize(node: unquoted(node))
    }

    /// Strings (JSON quotes all of them) unquoted where a YAML reader would
    /// still read a string (`y` or `10` would read as a boolean or number).
    static func unquoted(_ node: Node) -> Node {
        switch node {
        case .scalar(let s):
            guard s.style != .plain else { return node }
            let plain = Node.scalar(.init(s.string, Tag(.implicit), .plain))
            let keepsQuotes = Resolver.default.resolveTag(of: plain) != .str
                || s.string.isEmpty || s.string.first == " " || s.string.last == " "
            return keepsQuotes ? node : plain
        case .mapping(let m):
            return .mapping(.init(m.map { (unquoted($0.key), unquoted($0.value)) }, m.tag, m.style))
        case .sequence(let q):
            return .sequence(.init(q.map(unquoted), q.tag, q.style))
        case .alias:
            return node
        }
    }

    /// A YAML node as a JSON value that decodes back to the same resource:
    /// plain (unquoted) scalars that the decoder reads as numbers, booleans
    /// or null become those; everything else stays the string it was.
    static func jsonValue(_ node: Node) -> Any {
        switch node {
        case .scalar(let s):
            guard s.style == .plain else { return s.string }
            if ["null", "Null", "NULL", "~", ""].contains(s.string) { return NSNull() }
            if ["true", "True", "TRUE"].contains(s.string) { return true }
            if ["false", "False", "FALSE"].contains(s.string) { return false }
            if let n = Int(s.string) { return n }
            return s.string
        case .mapping(let m):
            var object: [String: Any] = [:]
            for (key, value) in m { object[key.scalar?.string ?? ""] = jsonValue(value) }
            return object
        case .sequence(let q):
            return q.map(jsonValue)
        case .alias:
            return NSNull()
        }
    }
}
