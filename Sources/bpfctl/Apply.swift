import ArgumentParser
import Foundation
import ManxDatastore
import ManxEtcd
import ManxModel

/// Which datastore a command writes to: a directory, or etcd.
struct DatastoreOptions: ParsableArguments {
    @Option(help: "Directory of YAML resources (the datastore), unless --etcd-endpoints is given.")
    var datastore: String = "/etc/manx/resources"

    @Option(help: "etcd client URLs, comma-separated: the cluster datastore, instead of a directory.")
    var etcdEndpoints: String?

    func open() throws -> any Datastore {
        if let etcdEndpoints { return EtcdDatastore(client: try EtcdClient(endpoints: etcdEndpoints.split(separator: ",").map(String.init))) }
        return DirectoryDatastore(directory: datastore)
    }
}

struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate resources and write them into the datastore: every document of a file, or none.")

    @Option(name: .shortAndLong, help: "A YAML file of resources ('-': standard input). Repeat for several files.")
    var filename: [String]

    @OptionGroup var store: DatastoreOptions

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: OutputFormat = .text

    struct Applied: Encodable {
        var file: String
        var resources: [String]
        var keys: [String]
    }

    func run() async throws {
        // Every file is validated before anything is written.
        var files: [(name: String, text: String, documents: [ResourceDocument])] = []
        var errors: [ManxModel.ValidationError] = []
        for name in filename {
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
        let datastore = try store.open()
        var applied: [Applied] = []
        for file in files {
            do {
                let keys = try await datastore.apply(file.documents, file: file.name, text: file.text)
                applied.append(Applied(file: file.name, resources: file.documents.map(\.header.description), keys: keys))
            } catch {
                fail(error)
            }
        }
        if output == .json { return try printJSON(applied) }
        for a in applied {
            for resource in a.resources { print("applied \(resource)") }
        }
    }

    private func fail(_ error: Error) -> Never {
        FileHandle.standardError.write(Data("bpfctl apply: \(error)\n".utf8))
        Foundation.exit(2)
    }
}
