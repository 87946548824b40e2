import Yams

/// Collects the errors of one resource while it is decoded, so one pass
/// reports every problem with its field path.
final class DecodeContext {
    let file: String
    var resource: String
    private(set) var errors: [ValidationError] = []

    init(file: String, resource: String) {
        self.file = file
        self.resource = resource
    }

    func fail(_ path: String, _ reason: String) {
        errors.append(ValidationError(file: file, resource: resource, field: path, reason: reason))
    }
}

/// A YAML node with its field path, and typed accessors that report
/// (rather than throw) mismatches.
struct YNode {
    let node: Node
    let ctx: DecodeContext
    /// The path is built when asked for (errors, and a node's own children):
    /// most nodes are leaves that are read and never named.
    private let parent: String
    private let component: Component

    private enum Component {
        case none
        case key(String)
        case index(Int)
    }

    init(node: Node, path: String, ctx: DecodeContext) {
        self.init(node: node, parent: path, component: .none, ctx: ctx)
    }

    private init(node: Node, parent: String, component: Component, ctx: DecodeContext) {
        self.node = node
        self.parent = parent
        self.component = component
        self.ctx = ctx
    }

    var path: String {
        switch component {
        case .none: parent
        case .key(let key): parent.isEmpty ? key : "\(parent).\(key)"
        case .index(let i): "\(parent)[\(i)]"
        }
    }

    func child(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The mapping's fields. Keys outside `allowed` are reported as unknown.
    func fields(allowed: Set<String>? = nil) -> [String: YNode]? {
        guard let mapping = node.mapping else {
            if case .scalar(let s) = node, s.string == "null" || s.string == "~" || s.string.isEmpty, s.style == .plain {
                return [:] // `key:` with no value: an empty object, as Kubernetes reads it
            }
            ctx.fail(path, "expected an object")
            return nil
        }
        var result: [String: YNode] = [:]
        let path = self.path
        for (k, v) in mapping {
            guard let key = k.scalar?.string else { ctx.fail(path, "keys must be strings"); continue }
            let sub = YNode(node: v, parent: path, component: .key(key), ctx: ctx)
            // `key: null` (or `key:` alone) means the field is not set, as in Kubernetes.
            if sub.isNull { continue }
            if let allowed, !allowed.contains(key) {
                ctx.fail(sub.path, "unknown field (expected one of: \(allowed.sorted().joined(separator: ", ")))")
                continue
            }
            if result[key] != nil { ctx.fail(sub.path, "duplicate field"); continue }
            result[key] = sub
        }
        return result
    }

    var isNull: Bool {
        if case .scalar(let s) = node, s.style == .plain, s.string == "null" || s.string == "~" || s.string.isEmpty { return true }
        return false
    }

    var string: String? {
        guard let s = node.scalar else { ctx.fail(path, "expected a string"); return nil }
        return s.string
    }

    /// A scalar written as a plain (unquoted) integer.
    var plainInteger: Int? {
        guard let s = node.scalar, s.style == .plain, let n = Int(s.string) else { return nil }
        return n
    }

    func integer(in range: ClosedRange<Int>, what: String) -> Int? {
        guard let s = node.scalar, let n = Int(s.string) else {
            ctx.fail(path, "\(what) must be an integer, got \(describe)")
            return nil
        }
        guard range.contains(n) else {
            ctx.fail(path, "\(what) \(n) is out of range \(range.lowerBound)-\(range.upperBound)")
            return nil
        }
        return n
    }

    var list: [YNode]? {
        if isNull { return [] }
        guard let seq = node.sequence else { ctx.fail(path, "expected a list"); return nil }
        let path = self.path
        return seq.enumerated().map { YNode(node: $1, parent: path, component: .index($0), ctx: ctx) }
    }

    var stringList: [String]? {
        guard let items = list else { return nil }
        let strings = items.compactMap(\.string)
        return strings.count == items.count ? strings : nil
    }

    /// A string-to-string map (labels, annotations).
    var stringMap: [String: String]? {
        guard let fields = fields() else { return nil }
        var result: [String: String] = [:]
        for (k, v) in fields {
            guard let s = v.node.scalar else { ctx.fail(v.path, "expected a string value"); continue }
            result[k] = s.string
        }
        return result
    }

    /// How the value looked, for error messages.
    var describe: String {
        switch node {
        case .scalar(let s): return "'\(s.string)'"
        case .mapping: return "an object"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }
}
