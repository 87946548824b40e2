/// A precise rejection of input: the file, the resource (kind namespace/name),
/// the field path inside it, and the reason.
public struct ValidationError: Error, Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var resource: String
    public var field: String
    public var reason: String

    public init(file: String, resource: String, field: String, reason: String) {
        self.file = file
        self.resource = resource
        self.field = field
        self.reason = reason
    }

    public var description: String {
        var parts: [String] = []
        if !file.isEmpty { parts.append(file) }
        if !resource.isEmpty { parts.append(resource) }
        if !field.isEmpty { parts.append(field) }
        return (parts + [reason]).joined(separator: ": ")
    }
}

/// Every error found in a batch. A batch with any error applies nothing.
public struct ValidationErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ValidationError]

    public init(_ errors: [ValidationError]) { self.errors = errors }

    public var description: String {
        errors.map(\.description).joined(separator: "\n")
    }
}
