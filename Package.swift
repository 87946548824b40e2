// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Manx",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "manxd", targets: ["manxd"]),
        .executable(name: "bpfctl", targets: ["bpfctl"]),
        .executable(name: "manx-probe", targets: ["manx-probe"]),
        .executable(name: "manx-conformance", targets: ["manx-conformance"]),
        .executable(name: "manx-bench", targets: ["manx-bench"]),
        .executable(name: "manx-cni", targets: ["manx-cni"]),
        .executable(name: "manx-cluster", targets: ["manx-cluster"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        // libbpf, found with pkg-config. Only ManxBPF imports it.
        .systemLibrary(
            name: "CLibBPF",
            pkgConfig: "libbpf",
            providers: [.apt(["libbpf-dev", "libelf-dev", "zlib1g-dev"])]
        ),
        // The one C header that defines every map layout shared by the BPF
        // programs and Swift (bpf/include/manx/maps.h).
        .target(
            name: "ManxMapLayout",
            path: "bpf",
            exclude: ["progs", "lib"],
            sources: ["layout"],
            publicHeadersPath: "include"
        ),
        // Compiles bpf/progs/*.c with clang -target bpf and embeds the objects.
        .plugin(name: "BPFCompilerPlugin", capability: .buildTool()),
        .target(name: "ManxBPFObjects", plugins: ["BPFCompilerPlugin"]),
        // pipe2 and closefrom for posix_spawn (GNU declarations Glibc's module lacks).
        .systemLibrary(name: "CSpawn"),
        // Runs short-lived external programs (ip, iptables, CNI plugins).
        .target(name: "ManxCommand", dependencies: ["CSpawn"]),
        .systemLibrary(name: "CNetlink"),
        // rtnetlink requests for links, addresses and routes, in any network namespace.
        .target(name: "ManxNetlink", dependencies: ["CNetlink"]),
        // The thin typed libbpf layer: the only code that touches raw pointers.
        .target(name: "ManxBPF", dependencies: ["CLibBPF"]),
        // memmem (a GNU declaration Glibc's module lacks).
        .systemLibrary(name: "CBytes"),
        // Resources (Kubernetes and Calico kinds), YAML decoding, validation.
        .target(name: "ManxModel", dependencies: ["Yams", "ManxSelectors", "CBytes"]),
        // Label selectors.
        .target(name: "ManxSelectors"),
        // Policy -> identities, rule sets, decision tables (pure Swift).
        .target(name: "ManxCompiler", dependencies: ["ManxModel", "ManxSelectors", "ManxMapLayout"]),
        // An independent, naive evaluator of the policy semantics: the oracle
        // differential tests compare the compiler and BPF programs against.
        .target(name: "ManxReference", dependencies: ["ManxModel", "ManxSelectors"]),
        // Typed maps, program attachment, applying compiled state to the kernel.
        .target(
            name: "ManxDataplane",
            dependencies: ["ManxBPF", "ManxBPFObjects", "ManxMapLayout", "ManxCompiler", "ManxRouting", "ManxCommand", "ManxNodeState"]
        ),
        // What a node's daemon publishes (paths, metadata, endpoint status):
        // readable without libbpf, by the CNI plugin.
        .target(name: "ManxNodeState", dependencies: ["ManxCompiler"]),
        // The same compiled policy as iptables rules and ipsets.
        .target(name: "ManxIptables", dependencies: ["ManxCompiler", "ManxCommand"]),
        // The directory-of-YAML datastore and its watcher.
        .target(name: "ManxDatastore", dependencies: ["ManxModel"]),
        // etcd v3 through its JSON gateway, and the etcd datastore.
        .target(
            name: "ManxEtcd",
            dependencies: ["ManxDatastore", "ManxModel"]
        ),
        // IP address management: pools, node blocks, allocations in the datastore.
        .target(name: "ManxIPAM", dependencies: ["ManxModel", "ManxDatastore", "ManxSelectors", "ManxEtcd"]),
        // Routes, encapsulation and MTU of a node, from pools, nodes and blocks.
        .target(name: "ManxRouting", dependencies: ["ManxModel"]),
        // The CNI plugin (spec 1.0): veth, address, routes, endpoint registration.
        .target(name: "ManxCNI", dependencies: ["ManxModel", "ManxSelectors", "ManxDatastore", "ManxIPAM", "ManxNodeState", "ManxCommand", "ManxEtcd", "ManxNetlink"]),
        .executableTarget(
            name: "manx-cni", dependencies: ["ManxCNI"],
            // A runtime starts the plugin for every pod: linked statically it
            // starts in ~4 ms instead of ~13 (resolving Foundation and ICU).
            // The archives Foundation's autolinking misses are named; lld
            // skips the toolchain's glibc link-time warnings that gold prints.
            linkerSettings: [.unsafeFlags(["-static-stdlib", "-lCoreFoundation", "-l_FoundationICU", "-l_FoundationCollections",
                                           "-l_FoundationCShims", "-use-ld=lld"])]
        ),
        // Structured (JSON lines) logs for swift-log.
        .target(name: "ManxLogging", dependencies: [.product(name: "Logging", package: "swift-log")]),
        // Command-line vocabulary every command shares (`--dataplane`).
        .target(name: "ManxOptions", dependencies: ["ManxDatastore", "ManxEtcd", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // The node daemon's logic.
        .target(
            name: "ManxDaemon",
            dependencies: [
                "ManxBPF", "ManxDatastore", "ManxCompiler", "ManxDataplane", "ManxNodeState", "ManxIptables", "ManxRouting",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "manxd",
            dependencies: ["ManxDaemon", "ManxIptables", "ManxDatastore", "ManxEtcd", "ManxNodeState", "ManxOptions", "ManxLogging", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "bpfctl",
            dependencies: [
                "ManxDataplane", "ManxDatastore", "ManxEtcd", "ManxIPAM", "ManxModel", "ManxNodeState", "ManxOptions",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Real TCP/UDP/SCTP servers and probes for the conformance runner.
        .executableTarget(name: "manx-probe"),
        .target(name: "ManxConformance", dependencies: ["ManxModel", "ManxDatastore", "ManxDataplane", "ManxNodeState", "ManxCommand", "ManxOptions"]),
        .executableTarget(
            name: "manx-conformance",
            dependencies: ["ManxConformance", "ManxOptions", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "manx-cluster",
            dependencies: ["ManxConformance", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Benchmarks, driven by the scripts in bench/.
        .executableTarget(
            name: "manx-bench",
            dependencies: [
                "ManxBPF", "ManxBPFObjects", "ManxCommand", "ManxCompiler", "ManxConformance", "ManxDataplane", "ManxDatastore", "ManxMapLayout", "ManxModel", "ManxNodeState", "ManxOptions",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "ManxUnitTests", dependencies: ["ManxModel", "Yams", "ManxSelectors", "ManxCompiler", "ManxDatastore", "ManxMapLayout", "ManxReference", "ManxIptables", "ManxIPAM", "ManxRouting", "ManxEtcd", "ManxOptions", "ManxLogging", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "ManxKernelTests", dependencies: ["ManxBPF", "ManxDataplane", "ManxCompiler", "ManxModel", "ManxMapLayout", "ManxConformance", "ManxDatastore", "ManxReference", "ManxIptables", "ManxIPAM", "ManxCNI", "ManxRouting", "ManxEtcd", "ManxDaemon", "ManxNodeState", "ManxNetlink", "ManxCommand", "ManxOptions"]),
    ],
    swiftLanguageModes: [.v6]
)
