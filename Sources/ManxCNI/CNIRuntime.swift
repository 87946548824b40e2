import Foundation
import ManxCommand

/// A small CNI runtime, after libcni: runs the plugins of a network
/// configuration list as child processes, chaining results.
///
/// - ADD runs the plugins in order, each getting the list's name and
///   cniVersion and the previous plugin's result as prevResult; the last
///   result is cached in `<cacheDirectory>/<containerID>.json` and
///   returned. If a plugin fails, the plugins run so far (and the failing
///   one) get DEL in reverse order before the error is thrown, so a failed
///   ADD leaves nothing behind (libcni leaves that to its caller).
/// - CHECK runs them in order with the cached result as prevResult.
/// - DEL runs them in reverse order with the cached result (if any) as
///   prevResult, every plugin even after a failure, and removes the cache
///   entry when all succeeded.
///
/// Plugins run in the caller's network namespace, or in `hostNetns` (a
/// path such as /run/netns/node1) through `nsenter --net`.
public struct CNIRuntime: Sendable {
    public var pluginDirectories: [String]
    public var cacheDirectory: String
    /// The network namespace plugins run in (their "host" side); nil: the caller's.
    public var hostNetns: String?

    public init(pluginDirectories: [String], cacheDirectory: String, hostNetns: String? = nil) {
        self.pluginDirectories = pluginDirectories
        self.cacheDirectory = cacheDirectory
        self.hostNetns = hostNetns
    }

    struct Invocation {
        var containerID: String
        var netns: String
        var ifname: String
        var args: [String: String]
    }

    struct ConfList {
        var name: String
        var cniVersion: String
        var plugins: [[String: JSONValue]]
    }

    // MARK: Operations

    @discardableResult
    public func add(conflist: String, containerID: String, netns: String, ifname: String = "eth0",
                    args: [String: String]) throws(CNIRuntimeError) -> String {
        let list = try parse(conflist)
        let call = Invocation(containerID: containerID, netns: netns, ifname: ifname, args: args)
        var result: JSONValue? = nil
        for (index, plugin) in list.plugins.enumerated() {
            do throws(CNIRuntimeError) {
                let output = try run("ADD", plugin, list: list, call, prevResult: result)
                switch JSONValue.parse(output) {
                case .success(let value) where value.objectValue != nil: result = value
                case .success(let value):
                    throw CNIRuntimeError(plugin: Self.type(plugin), code: nil, message: "ADD printed \(value.typeName), not a result object")
                case .failure(let e):
                    throw CNIRuntimeError(plugin: Self.type(plugin), code: nil, message: "ADD printed no valid result (\(e.reason)): \(output)")
                }
            } catch {
                for undo in list.plugins[0...index].reversed() {
                    _ = try? run("DEL", undo, list: list, call, prevResult: result)
                }
                throw error
            }
        }
        guard let result else { throw CNIRuntimeError(plugin: "", code: nil, message: "the configuration list has no plugins") }
        try writeCache(containerID, result.text)
        return result.text
    }

    public func check(conflist: String, containerID: String, netns: String, ifname: String = "eth0",
                      args: [String: String]) throws(CNIRuntimeError) {
        let list = try parse(conflist)
        guard let cached = cachedResult(containerID: containerID), case .success(let result) = JSONValue.parse(cached) else {
            throw CNIRuntimeError(plugin: "", code: nil, message: "no cached result for container \(containerID) in \(cacheDirectory)")
        }
        let call = Invocation(containerID: containerID, netns: netns, ifname: ifname, args: args)
        for plugin in list.plugins {
            _ = try run("CHECK", plugin, list: list, call, prevResult: result)
        }
    }

    public func del(conflist: String, containerID: String, netns: String, ifname: String = "eth0",
                    args: [String: String]) throws(CNIRuntimeError) {
        let list = try parse(conflist)
        let result = cachedResult(containerID: containerID).flatMap { try? JSONValue.parse($0).get() }
        let call = Invocation(containerID: containerID, netns: netns, ifname: ifname, args: args)
        var first: CNIRuntimeError?
        for plugin in list.plugins.reversed() {
            do throws(CNIRuntimeError) {
                _ = try run("DEL", plugin, list: list, call, prevResult: result)
            } catch {
                first = first ?? error
            }
        }
        if let first { throw first }
        try? FileManager.default.removeItem(atPath: cachePath(containerID))
    }

    /// The result ADD cached for the container.
    public func cachedResult(containerID: String) -> String? {
        FileManager.default.contents(atPath: cachePath(containerID)).map { String(decoding: $0, as: UTF8.self) }
    }

    // MARK: Pieces

    func cachePath(_ containerID: String) -> String {
        URL(fileURLWithPath: cacheDirectory).appendingPathComponent("\(containerID).json").path
    }

    func writeCache(_ containerID: String, _ text: String) throws(CNIRuntimeError) {
        do {
            try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: URL(fileURLWithPath: cachePath(containerID)), options: .atomic)
        } catch {
            throw CNIRuntimeError(plugin: "", code: nil, message: "cannot cache the result in \(cachePath(containerID)): \(error.localizedDescription)")
        }
    }

    func parse(_ conflist: String) throws(CNIRuntimeError) -> ConfList {
        func fail(_ why: String) -> CNIRuntimeError { CNIRuntimeError(plugin: "", code: nil, message: "invalid network configuration list: \(why)") }
        let object: [String: JSONValue]
        switch JSONValue.parse(conflist) {
        case .failure(let e): throw fail("not valid JSON: \(e.reason)")
        case .success(let value):
            guard let o = value.objectValue else { throw fail("must be a JSON object, got \(value.typeName)") }
            object = o
        }
        guard let name = object["name"]?.stringValue, !name.isEmpty else { throw fail("no name") }
        guard let version = object["cniVersion"]?.stringValue, !version.isEmpty else { throw fail("no cniVersion") }
        guard let plugins = object["plugins"]?.arrayValue, !plugins.isEmpty else { throw fail("no plugins") }
        var configs: [[String: JSONValue]] = []
        for (i, p) in plugins.enumerated() {
            guard let config = p.objectValue else { throw fail("plugins[\(i)] is not an object") }
            guard let type = config["type"]?.stringValue, !type.isEmpty else { throw fail("plugins[\(i)] has no type") }
            if type.contains("/") { throw fail("plugins[\(i)].type '\(type)' must be a plain name") }
            configs.append(config)
        }
        return ConfList(name: name, cniVersion: version, plugins: configs)
    }

    static func type(_ plugin: [String: JSONValue]) -> String { plugin["type"]?.stringValue ?? "" }

    func find(_ type: String) throws(CNIRuntimeError) -> String {
        for dir in pluginDirectories {
            let path = URL(fileURLWithPath: dir).appendingPathComponent(type).path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw CNIRuntimeError(plugin: type, code: nil, message: "plugin \(type) not found in \(pluginDirectories.joined(separator: ", "))")
    }

    /// Runs one plugin; returns its stdout, or throws its error JSON.
    func run(_ command: String, _ plugin: [String: JSONValue], list: ConfList, _ call: Invocation,
             prevResult: JSONValue?) throws(CNIRuntimeError) -> String {
        let type = Self.type(plugin)
        let executable = try find(type)
        var config = plugin
        config["name"] = .string(list.name)
        config["cniVersion"] = .string(list.cniVersion)
        // As libcni: prevResult always in a chained ADD, for CHECK and DEL
        // from 0.4.0 on.
        if let prevResult, command == "ADD" || CNIVersion.atLeast(list.cniVersion, "0.4.0") {
            config["prevResult"] = prevResult
        }
        var args = call.args
        if args["IgnoreUnknown"] == nil { args["IgnoreUnknown"] = "1" }
        var env = ProcessInfo.processInfo.environment
        env["CNI_COMMAND"] = command
        env["CNI_CONTAINERID"] = call.containerID
        env["CNI_NETNS"] = call.netns
        env["CNI_IFNAME"] = call.ifname
        // IgnoreUnknown first, as container runtimes pass it.
        env["CNI_ARGS"] = (["IgnoreUnknown=\(args["IgnoreUnknown"]!)"]
            + args.filter { $0.key != "IgnoreUnknown" }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
            .joined(separator: ";")
        env["CNI_PATH"] = pluginDirectories.joined(separator: ":")
        let argv = (hostNetns.map { ["nsenter", "--net=\($0)"] } ?? []) + [executable]
        let out: Command.Output
        do {
            out = try Command.run(argv, input: JSONValue.object(config).text, environment: env)
        } catch {
            throw CNIRuntimeError(plugin: type, code: nil, message: error.description)
        }
        guard out.succeeded else { throw CNIRuntimeError(plugin: type, command: command, output: out) }
        return out.stdout
    }
}

/// A plugin's failure, from its error JSON when it printed one.
public struct CNIRuntimeError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The plugin's type ("" for errors of the list itself).
    public var plugin: String
    /// The CNI error code, if the plugin printed an error JSON.
    public var code: Int?
    public var message: String
    public var details: String

    public init(plugin: String, code: Int?, message: String, details: String = "") {
        self.plugin = plugin
        self.code = code
        self.message = message
        self.details = details
    }

    init(plugin: String, command: String, output: Command.Output) {
        self.plugin = plugin
        if case .success(let value) = JSONValue.parse(output.stdout), let object = value.objectValue,
           case .int(let code)? = object["code"] {
            self.code = Int(code)
            message = object["msg"]?.stringValue ?? "(no msg)"
            details = object["details"]?.stringValue ?? ""
        } else {
            code = nil
            message = "\(command) exited with status \(output.status): \(output.message)"
            details = ""
        }
    }

    public var description: String {
        let who = plugin.isEmpty ? "CNI" : "plugin \(plugin)"
        let codeText = code.map { " (code \($0))" } ?? ""
        return "\(who)\(codeText): \(message)\(details.isEmpty ? "" : ": \(details)")"
    }
}
