import ArgumentParser
import Foundation
import ManxIPAM
import ManxModel
import ManxOptions

/// `bpfctl ipam show` and `bpfctl ipam check`, read from the datastore (not
/// from a node): its IPPools, IPAMBlocks and WorkloadEndpoints.
struct IPAMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipam", abstract: "Address management in the datastore: usage, and allocations that disagree with endpoints.",
        subcommands: [Show.self, Check.self])

    struct Options: ParsableArguments {
        @OptionGroup var store: DatastoreOptions

        @Option(name: .shortAndLong, help: "Output format: text or json.")
        var output: OutputFormat = .text

        /// The report of the datastore as it is now. Only the kinds IPAM
        /// reads are decoded; an error in them is reported and fails.
        func report(_ command: String) async throws -> IPAMReport {
            let keys = try await store.snapshot(command)
            do {
                return IPAMReport(try ResourceSet.decode(files: keys.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
                                                         kinds: ["IPPool", "IPAMBlock", "WorkloadEndpoint"]))
            } catch {
                exitWithError(command, "the datastore's IPAM resources are invalid: \(error)", status: 2)
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Addresses by pool, block and node: capacity and allocated.")

        @OptionGroup var options: Options

        func run() async throws {
            let report = try await options.report("ipam show")
            if options.output == .json { return try printJSON(report) }
            func table(_ title: String, _ header: [String], _ rows: [[String]]) {
                print(title)
                printTable([header] + rows)
                print()
            }
            func used(_ u: IPAMReport.Usage) -> [String] {
                ["\(u.allocated)", "\(u.capacity)", u.capacity == 0 ? "-" : String(format: "%.0f%%", 100 * Double(u.allocated) / Double(u.capacity))]
            }
            table("IP pools:", ["NAME", "CIDR", "BLOCKS", "ALLOCATED", "CAPACITY", "USED"],
                  report.pools.map { [$0.name, $0.cidr ?? "", "\($0.blocks)"] + used($0) })
            table("Blocks:", ["CIDR", "POOL", "NODE", "ALLOCATED", "CAPACITY", "USED"],
                  report.blocks.map { [$0.cidr ?? "", $0.pool ?? "", $0.node ?? ""] + used($0) })
            table("Nodes:", ["NODE", "BLOCKS", "ALLOCATED", "CAPACITY", "USED"], report.nodes.map { [$0.name, "\($0.blocks)"] + used($0) })
        }
    }

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Addresses allocated without a live WorkloadEndpoint, endpoints whose address nobody holds, and blocks outside every pool. Exits 1 when there are any.",
            discussion: "A CNI ADD in progress holds its address a moment before it writes its endpoint, so run it again before releasing anything it lists.")

        @OptionGroup var options: Options

        func run() async throws {
            let report = try await options.report("ipam check")
            if options.output == .json {
                try printJSON(report.problems)
            } else if report.problems.isEmpty {
                print("IPAM is consistent: \(report.blocks.reduce(0) { $0 + $1.allocated }) allocations, each with its endpoint")
            } else {
                printTable([["PROBLEM", "ADDRESS", "CONTAINER", "WORKLOAD", "DETAIL"]]
                    + report.problems.map { [$0.kind.rawValue, $0.address, $0.handle ?? "", $0.workload ?? "", $0.detail] })
            }
            if !report.problems.isEmpty { throw ExitCode(1) }
        }
    }
}

func exitWithError(_ command: String, _ message: String, status: Int32) -> Never {
    FileHandle.standardError.write(Data("bpfctl \(command): \(message)\n".utf8))
    Foundation.exit(status)
}

/// A table as calicoctl prints one: a header line, no indent.
func printTable(_ rows: [[String]]) {
    guard let header = rows.first else { return }
    print(DumpText.table(header, Array(rows.dropFirst()), indent: ""))
}
