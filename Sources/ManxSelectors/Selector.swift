/// A label selector: the Calico selector language, into which Kubernetes
/// `LabelSelector`s (matchLabels, matchExpressions) are translated too.
///
/// Semantics follow Calico: `k != v` and `k not in {...}` also match when
/// the label is absent; string operators need the label to be present.
public indirect enum Selector: Hashable, Sendable {
    /// `all()`: matches everything.
    case all
    /// `global()`: in a rule's namespaceSelector, "not namespaced" (global
    /// resources such as GlobalNetworkSets and host endpoints). As a label
    /// test it matches nothing.
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

    public func matches(_ labels: [String: String]) -> Bool { matches(labels, global: false) }

    /// `global`: the thing tested is not namespaced (a namespace selector
    /// tested against a GlobalNetworkSet), which is what `global()` selects.
    public func matches(_ labels: [String: String], global: Bool) -> Bool {
        switch self {
        case .all: return true
        case .global: return global
        case let .equals(k, v): return labels[k] == v
        case let .notEquals(k, v): return labels[k] != v
        case let .inSet(k, set): return labels[k].map(set.contains) ?? false
        case let .notInSet(k, set): return !(labels[k].map(set.contains) ?? false)
        case let .has(k): return labels[k] != nil
        case let .contains(k, s): return labels[k]?.contains(s) ?? false
        case let .startsWith(k, s): return labels[k]?.hasPrefix(s) ?? false
        case let .endsWith(k, s): return labels[k]?.hasSuffix(s) ?? false
        case let .not(inner): return !inner.matches(labels, global: global)
        case let .and(a, b): return a.matches(labels, global: global) && b.matches(labels, global: global)
        case let .or(a, b): return a.matches(labels, global: global) || b.matches(labels, global: global)
        }
    }

    /// True when the selector mentions `global()` anywhere.
    public var mentionsGlobal: Bool {
        switch self {
        case .global: return true
        case let .not(s): return s.mentionsGlobal
        case let .and(a, b), let .or(a, b): return a.mentionsGlobal || b.mentionsGlobal
        default: return false
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
