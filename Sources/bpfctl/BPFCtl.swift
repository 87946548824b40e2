import ArgumentParser
import Foundation
import ManxDataplane
import ManxNodeState
import ManxSelectors

@main
struct BPFCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bpfctl",
        abstract: "Inspect a Manx node's BPF dataplane, and write resources into its datastore.",
        subcommands: [Apply.self, Delete.self, Get.self, IPAMCommand.self, Dump.self, Events.self, SelectorCommand.self])
}

enum OutputFormat: String, ExpressibleByArgument { case text, json }

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
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

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream flow events (denied flows, and allowed ones that Log rules mark) as they happen.")

    @Option(help: "Node name (pins under /sys/fs/bpf/manx/NODE); empty for the machine's own.")
    var node: String = ""

    @Option(name: .shortAndLong, help: "Output format: text or json (one object per line).")
    var output: OutputFormat = .text

    @Option(help: "Stop after this many seconds (default: run until interrupted).")
    var seconds: Double?

    @Option(help: "Stop after this many events.")
    var count: Int?

    func run() throws {
        let reader: FlowEventReader
        do { reader = try FlowEventReader(NodePaths(node: node)) } catch {
            throw ValidationError("cannot open the flow events of node '\(node)': \(error)")
        }
        let deadline = seconds.map { Date().addingTimeInterval($0) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        var seen = 0
        while deadline.map({ Date() < $0 }) ?? true {
            for event in try reader.next(timeoutMs: 200) {
                let text = output == .json ? String(decoding: try encoder.encode(event), as: UTF8.self) : event.line
                FileHandle.standardOutput.write(Data((text + "\n").utf8))
                seen += 1
                if let count, seen >= count { return }
            }
        }
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
