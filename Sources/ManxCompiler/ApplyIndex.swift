import ManxModel
import ManxSelectors

/// Policies by one condition every endpoint they apply to meets: a label
/// equality their selector requires, else the namespace they are scoped
/// to. A subject's applying policies are then looked for among those whose
/// condition it meets (and those without one), not among all of them: a
/// new set of labels on a node holding 10k policies evaluated every
/// policy's selector.
struct ApplyIndex {
    enum Key: Hashable {
        case label(String, String)
        case namespace(String)
        case none
    }

    /// Each policy's key, by its index in the compile's policies.
    private var keys: [Key] = []
    private var lists: [Key: [Int]] = [:]

    init(_ matches: [EndpointMatch] = []) {
        keys = matches.map(Self.key)
        for (i, key) in keys.enumerated() { lists[key, default: []].append(i) }
    }

    /// Policy `i` now selects by `match`.
    mutating func update(_ i: Int, _ match: EndpointMatch) {
        let key = Self.key(match)
        guard key != keys[i] else { return }
        lists[keys[i]]!.removeAll { $0 == i }
        keys[i] = key
        lists[key, default: []].append(i)
    }

    /// The policies that may apply to `w`, each once, in no order.
    func candidates(_ w: Workload) -> [Int] {
        var out = lists[.none] ?? []
        out += lists[.namespace(w.namespace)] ?? []
        for (k, v) in w.labels { out += lists[.label(k, v)] ?? [] }
        return out
    }

    static func key(_ match: EndpointMatch) -> Key {
        if let (k, v) = required(match.selector) { return .label(k, v) }
        if case .named(let ns) = match.namespaces { return .namespace(ns) }
        return .none
    }

    /// A label equality every match of `s` has.
    static func required(_ s: Selector) -> (String, String)? {
        switch s {
        case let .equals(k, v): return (k, v)
        case let .inSet(k, values) where values.count == 1: return (k, values.first!)
        case let .and(a, b): return required(a) ?? required(b)
        default: return nil
        }
    }
}
