import ArgumentParser
import Foundation
import ManxDataplane
import ManxSelectors

@main
struct BPFCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bpfctl",
        abstract: "Inspect a Manx node's BPF dataplane.",
        subcommands: [Dump.self, SelectorCommand.self])
}

enum OutputFormat: String, ExpressibleByArgument { case text, json }

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show endpoints, their policy entries, the ipcache, conntrack and counters.")

    @Option(help: "Node name (pins under /sys/fs/bpf/manx/NODE); empty for the machine's own.")
    var node: String = ""

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: OutputFormat = .text

    func run() throws {
        let report: DumpReport
        do {
            report = try DumpReport.read(NodePaths(node: node))
        } catch {
            throw ValidationError("cannot read the dataplane of node '\(node)': \(error)")
        }
        if output == .json { return try printJSON(report) }
        print(DumpText.render(report))
    }
}

struct SelectorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "selector", abstract: "Work with label selectors.",
                                                    subcommands: [Match.self])

    struct Match: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print true or false: does EXPR select these labels?")

        @Argument(help: "A Calico selector expression.")
        var expression: String

        @Option(help: "Labels as a JSON object of strings, e.g. '{\"app\":\"web\"}'.")
        var labels: String = "{}"

        func run() throws {
            let selector: Selector
            do {
                selector = try SelectorParser.parse(expression)
            } catch {
                FileHandle.standardError.write(Data("bpfctl: invalid selector: \(error)\n".utf8))
                throw ExitCode(2)
            }
            guard let object = try? JSONSerialization.jsonObject(with: Data(labels.utf8)) as? [String: Any],
                  let parsed = object as? [String: String] else {
                FileHandle.standardError.write(Data("bpfctl: --labels must be a JSON object of string values\n".utf8))
                throw ExitCode(2)
            }
            print(selector.matches(parsed) ? "true" : "false")
        }
    }
}
