// swift-tools-version:6.0
import PackageDescription

let gnuSource: [CSetting] = [.define("_GNU_SOURCE")]
let swiftGnu: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-D_GNU_SOURCE"])]

let package = Package(
    name: "vduse-blk",
    products: [
        .executable(name: "vduse-blk", targets: ["vduse-blk"]),
        .library(name: "VirtioDriverSim", targets: ["VirtioDriverSim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
    ],
    targets: [
        // C shims: the VDUSE uapi (our own copy), ioctls, mmap, eventfd, barriers.
        .target(name: "CVDUSE", cSettings: gnuSource),
        // C shims over liburing and libaio (kept out of the public header's includes).
        .target(name: "CAsyncIO", cSettings: gnuSource,
                linkerSettings: [.linkedLibrary("uring"), .linkedLibrary("aio")]),
        // Locks ThreadSanitizer can see (pthread mutex + condition; a value behind one).
        .target(name: "Locks", swiftSettings: swiftGnu),
        // Split virtqueues over an abstract guest memory: pure Swift, no syscalls.
        .target(name: "VirtioCore", dependencies: ["CVDUSE"], swiftSettings: swiftGnu),
        // virtio-blk: request parsing, config space, features.
        .target(name: "VirtioBlk", dependencies: ["VirtioCore"], swiftSettings: swiftGnu),
        // Storage backends behind one submit/reap seam.
        .target(name: "BlockBackends", dependencies: [
            "CAsyncIO", "CVDUSE",
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: swiftGnu),
        // libzstd (Debian libzstd-dev).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd"),
        // zstd seekable images: format, packer, verifier, and the compressed backend with its overlay.
        .target(name: "ZstdImage", dependencies: ["CZstd", "BlockBackends", "Locks"], swiftSettings: swiftGnu),
        // libcurl and OpenSSL digests behind typed C wrappers (Debian libcurl4-openssl-dev, libssl-dev).
        .target(name: "CRemote", cSettings: gnuSource,
                linkerSettings: [.linkedLibrary("curl"), .linkedLibrary("crypto")]),
        // Remote images (HTTP/S3): range fetcher, S3 signing, memory + disk chunk cache, the remote backend.
        .target(name: "RemoteImage", dependencies: [
            "CRemote", "BlockBackends", "ZstdImage", "Locks",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftGnu),
        // Per-queue workers: drain, parse, submit, reap, publish, notify.
        .target(name: "BlockEngine", dependencies: [
            "VirtioCore", "VirtioBlk", "BlockBackends", "CVDUSE",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftGnu),
        // The VDUSE device: control fd, messages, IOTLB, lifecycle.
        .target(name: "VDUSEDevice", dependencies: [
            "CVDUSE", "VirtioCore", "VirtioBlk", "BlockBackends", "BlockEngine",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "SystemPackage", package: "swift-system"),
        ], swiftSettings: swiftGnu),
        // Driver side of split rings in ordinary memory, for tests, benchmarks and fuzzers.
        .target(name: "VirtioDriverSim", dependencies: ["VirtioCore", "VirtioBlk", "CVDUSE", "Locks"],
                swiftSettings: swiftGnu),
        .executableTarget(name: "vduse-blk", dependencies: [
            "VDUSEDevice", "BlockBackends", "VirtioBlk", "ZstdImage", "RemoteImage", "Locks",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftGnu),
        // Benchmarks: allocation counter (interposes malloc) and the engine-alone benchmark.
        .target(name: "CMallocCounter"),
        .executableTarget(name: "engine-bench", dependencies: [
            "BlockEngine", "BlockBackends", "VirtioBlk", "VirtioCore", "VirtioDriverSim", "CMallocCounter", "CVDUSE",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftGnu),
        .testTarget(name: "VirtioCoreTests", dependencies: ["VirtioCore", "VirtioBlk", "VirtioDriverSim", "BlockBackends"],
                    swiftSettings: swiftGnu),
        .testTarget(name: "BlockBackendsTests", dependencies: ["BlockBackends"], swiftSettings: swiftGnu),
        .testTarget(name: "ZstdImageTests", dependencies: ["ZstdImage", "BlockBackends"], swiftSettings: swiftGnu),
        .testTarget(name: "RemoteImageTests", dependencies: ["RemoteImage", "BlockBackends", "ZstdImage", "CRemote"],
                    swiftSettings: swiftGnu),
        .testTarget(name: "BlockEngineTests", dependencies: [
            "BlockEngine", "BlockBackends", "VirtioBlk", "VirtioCore", "VirtioDriverSim", "VDUSEDevice", "ZstdImage",
        ], swiftSettings: swiftGnu),
        // The command line's validation (hostile arguments get a usage error, not a trap).
        .testTarget(name: "CLITests", dependencies: [
            "vduse-blk", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: swiftGnu),
        // ---- Fuzzing (issue 7; see Fuzz/README.md) -------------------------------------------------
        // Harnesses and invariants; fuzz-* are libFuzzer binaries when built by scripts/fuzz.sh and
        // input replayers otherwise; FuzzRegressionTests replays the corpora and every past finding.
        .target(name: "FuzzHarness", dependencies: [
            "BlockEngine", "BlockBackends", "VirtioBlk", "VirtioCore", "VirtioDriverSim", "VDUSEDevice", "CVDUSE", "ZstdImage",
            "RemoteImage",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: swiftGnu),
        .executableTarget(name: "fuzz-queue", dependencies: ["FuzzHarness"], swiftSettings: swiftGnu),
        .executableTarget(name: "fuzz-control", dependencies: ["FuzzHarness"], swiftSettings: swiftGnu),
        .executableTarget(name: "fuzz-parse", dependencies: ["FuzzHarness"], swiftSettings: swiftGnu),
        .executableTarget(name: "fuzz-zstd", dependencies: ["FuzzHarness"], swiftSettings: swiftGnu),
        .executableTarget(name: "fuzz-remote", dependencies: ["FuzzHarness"], swiftSettings: swiftGnu),
        .executableTarget(name: "fuzz-overlay", dependencies: ["FuzzHarness"], swiftSettings: swiftGnu),
        .testTarget(name: "FuzzRegressionTests", dependencies: ["FuzzHarness", "BlockBackends", "ZstdImage", "RemoteImage"],
                    swiftSettings: swiftGnu),
        // ---- end of fuzzing block --------------------------------------------------------------------
    ],
    swiftLanguageModes: [.v6]
)
