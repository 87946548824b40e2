// manx-probe: serves and probes real TCP/UDP/SCTP traffic between network
// namespaces for the Manx policy-conformance runner.
//
//   manx-probe serve --ports 80,81 [--ready-file PATH]
//   manx-probe probe [--timeout-ms 1500] [--udp-size N] tcp:IP:PORT udp:IP:PORT sctp:IP:PORT ...
//   manx-probe connrate --seconds S [--parallel K] IP:PORT   (benchmarks: new TCP connections/s)
//   manx-probe rr --seconds S IP:PORT           (benchmarks: UDP request/response latency)
//   manx-probe inject --interface IF [--count N] HEXFRAME...  (attack tests: raw frames)
//   manx-probe flood --flows N IP                (attack tests: N distinct UDP flows)
//   manx-probe echo --port P                     (TCP echo on long-lived connections)
//   manx-probe hold --interval-ms MS --seconds S IP:PORT  (one connection; prints each echo's time)
//
// Arguments are parsed by hand to keep the binary dependency-free.
import Glibc

let usageText = """
    usage: manx-probe serve --ports P1,P2,... [--ready-file PATH]
           manx-probe probe [--timeout-ms MS] [--udp-size N] (tcp|udp|sctp):IPv4:PORT...
           manx-probe connrate --seconds S [--parallel K] IPv4:PORT
           manx-probe rr --seconds S IPv4:PORT
           manx-probe inject --interface IF [--count N] HEXFRAME...
           manx-probe flood --flows N IPv4
           manx-probe echo --port P
           manx-probe hold --interval-ms MS --seconds S IPv4:PORT
    """

func usage(_ problem: String) -> Never {
    eprint("manx-probe: \(problem)\n\(usageText)")
    exit(2)
}

/// Ports must be 1...65535; port 0 would mean "any" to bind() and is never a valid target.
func parsePort(_ s: Substring) -> UInt16? {
    guard let p = UInt16(s), p != 0 else { return nil }
    return p
}

/// Parses `proto:IP:PORT`; the original text is kept so output echoes the input verbatim.
func parseTarget(_ text: String) -> Target? {
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count == 3, let proto = Proto(rawValue: String(parts[0])),
          let ip = parseIPv4(String(parts[1])), let port = parsePort(parts[2]) else { return nil }
    return Target(text: text, proto: proto, ip: ip, port: port)
}

var args = Array(CommandLine.arguments.dropFirst())
guard !args.isEmpty else { usage("missing command") }
let command = args.removeFirst()

/// Returns the value following an option flag, or fails with usage.
func optionValue(_ flag: String, _ rest: inout [String]) -> String {
    guard !rest.isEmpty else { usage("\(flag) needs a value") }
    return rest.removeFirst()
}

switch command {
case "serve":
    var ports: [UInt16] = []
    var readyFile: String?
    while !args.isEmpty {
        let flag = args.removeFirst()
        switch flag {
        case "--ports":
            for item in optionValue(flag, &args).split(separator: ",", omittingEmptySubsequences: false) {
                guard let p = parsePort(item) else { usage("bad port '\(item)'") }
                if !ports.contains(p) { ports.append(p) }
            }
        case "--ready-file":
            readyFile = optionValue(flag, &args)
        default:
            usage("unknown serve argument '\(flag)'")
        }
    }
    guard !ports.isEmpty else { usage("serve needs --ports") }
    serve(ports: ports, readyFile: readyFile)

case "probe":
    var timeoutMs = 1500
    var udpSize = 10
    var targets: [Target] = []
    while !args.isEmpty {
        let arg = args.removeFirst()
        if arg == "--timeout-ms" {
            guard let t = Int(optionValue(arg, &args)), t > 0 else { usage("bad --timeout-ms") }
            timeoutMs = t
        } else if arg == "--udp-size" {
            guard let n = Int(optionValue(arg, &args)), (1...65_507).contains(n) else { usage("bad --udp-size (1-65507)") }
            udpSize = n
        } else if let target = parseTarget(arg) {
            targets.append(target)
        } else {
            usage("bad target '\(arg)' (want tcp|udp|sctp:IPv4:PORT)")
        }
    }
    guard !targets.isEmpty else { usage("probe needs at least one target") }
    probe(targets, timeoutMs: timeoutMs, udpSize: udpSize)

case "connrate", "rr", "hold":
    var duration = 3.0
    var parallel = 1
    var interval = 100
    var target: (in_addr_t, UInt16)?
    while !args.isEmpty {
        let arg = args.removeFirst()
        if arg == "--interval-ms" {
            guard let v = Int(optionValue(arg, &args)), v > 0 else { usage("bad --interval-ms") }
            interval = v
        } else if arg == "--parallel" {
            guard let p = Int(optionValue(arg, &args)), (1...256).contains(p) else { usage("bad --parallel") }
            parallel = p
        } else if arg == "--seconds" {
            guard let d = Double(optionValue(arg, &args)), d > 0 else { usage("bad --seconds") }
            duration = d
        } else {
            let parts = arg.split(separator: ":")
            guard parts.count == 2, let ip = parseIPv4(String(parts[0])), let port = parsePort(parts[1]) else { usage("bad target '\(arg)' (want IPv4:PORT)") }
            target = (ip, port)
        }
    }
    guard let target else { usage("\(command) needs a target") }
    if command == "connrate" { connectionRate(target.0, target.1, duration: duration, parallel: parallel) }
    if command == "hold" { hold(target.0, target.1, intervalMs: interval, seconds: duration) }
    requestResponse(target.0, target.1, duration: duration)

case "echo":
    guard args.count == 2, args[0] == "--port", let port = parsePort(Substring(args[1])) else { usage("echo needs --port P") }
    echoServe(port: port)

case "inject":
    var interface: String?
    var count = 1
    var frames: [[UInt8]] = []
    while !args.isEmpty {
        let arg = args.removeFirst()
        if arg == "--interface" {
            interface = optionValue(arg, &args)
        } else if arg == "--count" {
            guard let n = Int(optionValue(arg, &args)), (1...100_000).contains(n) else { usage("bad --count") }
            count = n
        } else if let frame = parseHexFrame(arg) {
            frames.append(frame)
        } else {
            usage("bad frame '\(arg)' (want an Ethernet frame in hex, at least 14 bytes)")
        }
    }
    guard let interface, !frames.isEmpty else { usage("inject needs --interface and at least one frame") }
    inject(interface: interface, frames: frames, count: count)

case "flood":
    var flows = 0
    var target: in_addr_t?
    while !args.isEmpty {
        let arg = args.removeFirst()
        if arg == "--flows" {
            guard let n = Int(optionValue(arg, &args)), (1...10_000_000).contains(n) else { usage("bad --flows") }
            flows = n
        } else if let ip = parseIPv4(arg) {
            target = ip
        } else {
            usage("bad flood argument '\(arg)'")
        }
    }
    guard let target, flows > 0 else { usage("flood needs --flows and a target address") }
    flood(target, flows: flows)

default:
    usage("unknown command '\(command)'")
}
