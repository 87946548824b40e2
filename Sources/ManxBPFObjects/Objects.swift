import Foundation

/// The BPF objects compiled from `bpf/progs/*.c` by the package build and
/// embedded in the binary (see Plugins/BPFCompilerPlugin).
public enum BPFObjects {
    public enum Name: String, CaseIterable, Sendable {
        case workload
        case xdpPrefilter = "xdp_prefilter"
        case baseline
        case node
    }

    /// The ELF bytes of one object.
    public static func elf(_ name: Name) -> [UInt8] {
        guard let encoded = EmbeddedObjects.base64[name.rawValue],
              let data = Data(base64Encoded: encoded) else {
            fatalError("BPF object \(name.rawValue) was not embedded by the build")
        }
        return [UInt8](data)
    }
}
