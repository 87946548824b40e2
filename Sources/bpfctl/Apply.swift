import ArgumentParser
import Foundation
import ManxDatastore
import ManxModel
import ManxOptions

extension DatastoreOptions {
    /// Every key and its text, as the datastore's first snapshot has them.
    func snapshot(_ command: String) async throws -> [String: String] {
        let datastore = try open()
        for await update in datastore.updates() {
            switch update {
            case .snapshot(let snapshot, _): return snapshot
            case .unreachable(let reason): exitWithError(command, "cannot read \(datastore): \(reason)", status: 1)
            case .changes: continue
            }
        }
        exitWithError(command, "cannot read \(datastore)", status: 1)
    }
}

/// The files a command was given, each validated whole before anything is
/// written: one bad document anywhere and nothing changes.
struct ResourceFiles {
    let command: String
    var files: [(name: String, text: String, documents: [ResourceDocument])] = []

    init(_ names: [String], command: String) {
        self.command = command
        var errors: [ManxModel.ValidationError] = []
        for name in names {
            let data = name == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: name)
            guard let data, let text = String(data: data, encoding: .utf8) else {
                errors.append(ManxModel.ValidationError(file: name, resource: "", field: "", reason: "cannot read the file as UTF-8 text"))
                continue
            }
            do {
                files.append((name, text, try ResourceSet.documents(file: name, text: text)))
            } catch {
                errors += error.errors
            }
        }
        if !errors.isEmpty { fail(ValidationErrors(errors)) }
    }

    struct Done: Encodable {
        var file: String
        var resources: [String]
        var keys: [String]
    }

    /// Makes the change for every file at once, all or nothing, and reports it.
    func change(_ action: ResourceChange.Action, in datastore: any Datastore, output: OutputFormat, inParts: Bool) async throws {
        let keys: [[String]]
        do {
            keys = try await datastore.change(files.map { ResourceChange(action, file: $0.name, text: $0.text, documents: $0.documents) },
                                              inParts: inParts)
        } catch {
            fail(error)
        }
        let done = zip(files, keys).map { file, keys in Done(file: file.name, resources: file.documents.map(\.header.description), keys: keys) }
        if output == .json { return try printJSON(done) }
        for d in done {
            for resource in d.resources { print("\(action == .apply ? "applied" : "deleted") \(resource)") }
        }
    }

    func fail(_ error: Error) -> Never { exitWithError(command, "\(error)", status: 2) }
}

/// What apply and delete share: the files, the datastore, the output.
struct ResourceCommandOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "A YAML file of resources ('-': standard input). Repeat for several files.")
    var filename: [String]

    @OptionGroup var store: DatastoreOptions

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: OutputFormat = .text

    @Flag(help: "etcd: what one transaction cannot hold (128 operations, 1.5 MiB) is written in several, one after another, for a bulk load (validated whole once, but nodes may see it part written).")
    var inParts = false

    /// Validates every file, then makes the change for all of them.
    func run(_ action: ResourceChange.Action) async throws {
        let files = ResourceFiles(filename, command: action == .apply ? "apply" : "delete")
        try await files.change(action, in: try store.open(), output: output, inParts: inParts)
    }
}

struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate resources and write them into the datastore: every document of every file, or none, and only if the content they leave is valid.")

    @OptionGroup var options: ResourceCommandOptions

    func run() async throws {
        try await options.run(.apply)
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove the resources the files name from the datastore: all of them or none, and only if the content left is valid.")

    @OptionGroup var options: ResourceCommandOptions

    func run() async throws {
        try await options.run(.delete)
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List resources of one kind in the datastore (a table, or YAML or JSON), as calicoctl get does.")

    @Argument(help: "The kind: networkpolicy (np), globalnetworkpolicy (gnp), networkset, globalnetworkset, tier, profile, ippool, node, felixconfiguration, workloadendpoint (wep), namespace (ns), pod, ipamblock.")
    var kind: String

    @Argument(help: "Only the resource of this name.")
    var name: String?

    @Option(name: .shortAndLong, help: "Namespace of a namespaced kind (default: default).")
    var namespace: String?

    @Flag(name: [.customShort("A"), .long], help: "Every namespace.")
    var allNamespaces = false

    @OptionGroup var store: DatastoreOptions

    @Option(name: .shortAndLong, help: "Output format: table, yaml or json.")
    var output: GetFormat = .table

    enum GetFormat: String, ExpressibleByArgument { case table, yaml, json }

    func run() async throws {
        let query: ResourceQuery
        do {
            query = try ResourceQuery(kind: kind, name: name, namespace: namespace, allNamespaces: allNamespaces)
        } catch {
            throw ValidationError(error.description)
        }
        let keys = try await store.snapshot("get")
        let (matches, errors) = query.select(keys)
        for error in errors { FileHandle.standardError.write(Data("bpfctl get: skipped: \(error)\n".utf8)) }
        if name != nil && matches.isEmpty { exitWithError("get", "resource does not exist: \(query.missing)", status: 1) }
        switch output {
        case .json:
            let objects = matches.compactMap { try? JSONSerialization.jsonObject(with: Data($0.document.json.utf8)) }
            let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(objects.isEmpty ? "[]" : String(decoding: data, as: UTF8.self))
        case .yaml:
            print(try matches.map { try ResourceSet.yaml(ofJSON: $0.document.json) }.joined(separator: "---\n"), terminator: "")
        case .table:
            let showNamespace = query.namespaced && query.namespace == nil
            var rows = [(showNamespace ? ["NAMESPACE"] : []) + ["NAME", "API VERSION"]]
            for m in matches {
                rows.append((showNamespace ? [m.document.header.namespace ?? ""] : []) + [m.document.header.name, m.document.header.apiVersion])
            }
            printTable(rows)
        }
    }
}
