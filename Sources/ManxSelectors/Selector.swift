/// A label selector: the Calico selector language, into which Kubernetes
/// `LabelSelector`s (matchLabels, matchExpressions) are translated too.
///
/// Semantics follow Calico: `k != v` and `k not in {...}` also match when
/// the label is absent; string operators need the label to be present.
public indirect enum Selector: Hashable, Sendable {
    /// `all()`: matches everything; in a rule's namespaceSelector, whatever
    /// is namespaced (see `matchesNamespace`).
    case all
    /// `global()`: as a label test, matches everything, as in Calico's
    /// parser; in a rule's namespaceSelector, whatever is not namespaced
    /// (GlobalNetworkSets, host endpoints).
    case global
    case equals(String, String)
    case notEquals(String, String)
    case inSet(String, Set<String>)
    case notInSet(String, Set<String>)
    case has(String)
    case contains(String, String)
    case startsWith(String, String)
    case endsWith(String, String)
    case not(Selector)
    case and(Selector, Selector)
    case or(Selector, Selector)

    public func matches(_ labels: [String: String]) -> Bool { evaluate(labels, all: true, global: true) }

    /// As a rule's namespaceSelector, against the namespace labels of a
    /// workload or network set (none for a global one). Calico prefixes the
    /// selector's keys and rewrites `all()` to `has(projectcalico.org/namespace)`
    /// and `global()` to its negation (libcalico-go's rule conversion), so
    /// `all()` selects only what is namespaced, `global()` only what is not,
    /// and so does any expression they are in (`!all()` is `global()`).
    public func matchesNamespace(_ labels: [String: String], namespaced: Bool) -> Bool {
        evaluate(labels, all: namespaced, global: !namespaced)
    }

    /// The selector with `all()` and `global()` standing for the given values.
    private func evaluate(_ labels: [String: String], all: Bool, global: Bool) -> Bool {
        switch self {
        case .all: return all
        case .global: return global
        case let .equals(k, v): return labels[k] == v
        case let .notEquals(k, v): return labels[k] != v
        case let .inSet(k, set): return labels[k].map(set.contains) ?? false
        case let .notInSet(k, set): return !(labels[k].map(set.contains) ?? false)
        case let .has(k): return labels[k] != nil
        case let .contains(k, s): return labels[k]?.contains(s) ?? false
        case let .startsWith(k, s): return labels[k]?.hasPrefix(s) ?? false
        case let .endsWith(k, s): return labels[k]?.hasSuffix(s) ?? false
        case let .not(inner): return !inner.evaluate(labels, all: all, global: global)
        case let .and(a, b): return a.evaluate(labels, all: all, global: global) && b.evaluate(labels, all: all, global: global)
        case let .or(a, b): return a.evaluate(labels, all: all, global: global) || b.evaluate(labels, all: all, global: global)
        }
    }

    /// Conjunction of many selectors (`all()` for none).
    public static func allOf(_ selectors: [Selector]) -> Selector {
        guard var result = selectors.first else { return .all }
        for s in selectors.dropFirst() { result = .and(result, s) }
        return result
    }
}

extension Selector: CustomStringConvertible {
    /// Canonical Calico syntax; parsing it gives back an equal selector.
    public var description: String {
        func quote(_ s: String) -> String { s.contains("'") ? "\"\(s)\"" : "'\(s)'" }
        func set(_ s: Set<String>) -> String { "{" + s.sorted().map(quote).joined(separator: ", ") + "}" }
        switch self {
        case .all: return "all()"
        case .global: return "global()"
        case let .equals(k, v): return "\(k) == \(quote(v))"
        case let .notEquals(k, v): return "\(k) != \(quote(v))"
        case let .inSet(k, s): return "\(k) in \(set(s))"
        case let .notInSet(k, s): return "\(k) not in \(set(s))"
        case let .has(k): return "has(\(k))"
        case let .contains(k, s): return "\(k) contains \(quote(s))"
        case let .startsWith(k, s): return "\(k) starts with \(quote(s))"
        case let .endsWith(k, s): return "\(k) ends with \(quote(s))"
        case let .not(s): return "!(\(s))"
        case let .and(a, b): return "(\(a) && \(b))"
        case let .or(a, b): return "(\(a) || \(b))"
        }
    }
}
