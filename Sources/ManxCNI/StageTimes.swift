import Glibc

/// When each stage of one CNI command ended, on CLOCK_MONOTONIC (one clock
/// for every process of the machine, so a caller can set its own start
/// beside them). With MANX_CNI_TIMINGS set in the environment the plugin
/// prints them on stderr as one JSON line: how `bench/` breaks an ADD down
/// by stage. Runtimes show a plugin's stderr, so it is off by default.
public struct StageTimes: Sendable {
    public private(set) var marks: [(stage: String, seconds: Double)] = []

    public init() {}

    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    mutating func mark(_ stage: String) { marks.append((stage, Self.now())) }

    /// {"command":"ADD","status":0,"marks":[["parsed",12345.678901],...]}
    public func json(command: String, status: Int32) -> String {
        let list = marks.map { #"[""# + $0.stage + #"",\#(String(format: "%.6f", $0.seconds))]"# }.joined(separator: ",")
        return #"{"command":"\#(command)","status":\#(status),"marks":[\#(list)]}"#
    }
}
