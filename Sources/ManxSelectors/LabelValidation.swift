/// Kubernetes label syntax (apimachinery `IsQualifiedName` and
/// `IsValidLabelValue`). Selectors name keys with these rules, and the
/// model layer checks the labels on resources with them, so both agree on
/// what a label is.
///
/// Each function returns nil when the input is valid, otherwise the first
/// problem found, phrased to follow "invalid label key 'x': ".
public enum LabelValidation {
    /// The longest label value and the longest name part of a key.
    public static let maxNameLength = 63
    /// The longest prefix (a DNS-1123 subdomain) of a key.
    public static let maxPrefixLength = 253

    /// A key is `[prefix/]name`: the optional prefix is a DNS-1123 subdomain,
    /// the name 1...63 characters of `[A-Za-z0-9-_.]` starting and ending
    /// alphanumeric.
    public static func validateKey(_ key: String) -> String? {
        // Work on UTF-8 bytes: every allowed character is ASCII, and the
        // bytes of a non-ASCII character are never ASCII, so it is rejected.
        let bytes = Array(key.utf8)
        let slashes = bytes.indices.filter { bytes[$0] == UInt8(ascii: "/") }
        guard slashes.count <= 1 else {
            return "a label key may contain at most one '/' (between the prefix and the name)"
        }
        var name = bytes[...]
        if let slash = slashes.first {
            let prefix = bytes[..<slash]
            name = bytes[(slash + 1)...]
            if prefix.isEmpty { return "prefix part must be non-empty" }
            if prefix.count > maxPrefixLength {
                return "prefix part must be \(maxPrefixLength) characters or less"
            }
            if !isDNS1123Subdomain(prefix) {
                return "prefix part must be a DNS-1123 subdomain: lowercase alphanumeric characters, '-' or '.', "
                    + "each dot-separated part starting and ending with an alphanumeric character"
            }
        }
        if name.isEmpty { return "name part must be non-empty" }
        return checkName(name, what: "name part")
    }

    /// A value is empty, or 1...63 characters of `[A-Za-z0-9-_.]` starting
    /// and ending alphanumeric.
    public static func validateValue(_ value: String) -> String? {
        let bytes = Array(value.utf8)
        return bytes.isEmpty ? nil : checkName(bytes[...], what: "value")
    }

    // MARK: - Character classes

    /// The rule shared by key names and values (non-empty input).
    private static func checkName(_ bytes: ArraySlice<UInt8>, what: String) -> String? {
        if bytes.count > maxNameLength {
            return "\(what) must be \(maxNameLength) characters or less"
        }
        let bodyOK = bytes.allSatisfy { isAlphanumeric($0) || "-_.".utf8.contains($0) }
        guard bodyOK, let first = bytes.first, let last = bytes.last,
              isAlphanumeric(first), isAlphanumeric(last) else {
            return "\(what) must consist of alphanumeric characters, '-', '_' or '.', "
                + "and must start and end with an alphanumeric character"
        }
        return nil
    }

    /// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`:
    /// every dot-separated part is non-empty and starts and ends with a
    /// lowercase alphanumeric, so "a..b", "-a" and "a-.b" are all rejected.
    private static func isDNS1123Subdomain(_ bytes: ArraySlice<UInt8>) -> Bool {
        let parts = bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        return parts.allSatisfy { part in
            guard let first = part.first, let last = part.last,
                  isLowerAlphanumeric(first), isLowerAlphanumeric(last) else { return false }
            return part.allSatisfy { isLowerAlphanumeric($0) || $0 == UInt8(ascii: "-") }
        }
    }

    private static func isLowerAlphanumeric(_ b: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b)
    }

    private static func isAlphanumeric(_ b: UInt8) -> Bool {
        isLowerAlphanumeric(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
    }
}
