// swift-tools-version:6.0
import PackageDescription

let gnuSource: [CSetting] = [.define("_GNU_SOURCE")]

let package = Package(
    name: "vduse-blk",
    products: [
        .executable(name: "vduse-blk", targets: ["vduse-blk"]),
        .library(name: "VirtioDriverSim", targets: ["VirtioDriverSim"]),
        // Serve a virtio-blk device through VDUSE from your own BlockBackendFactory.
        .library(name: "VDUSEBlk", targets: ["VDUSEBlk"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        // Prometheus text exposition (the `--metrics` exporter only; pulls in swift-metrics' CoreMetrics).
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
    ],
    targets: [
        // ---- C shims: one function per call, -errno on failure, _GNU_SOURCE only inside them ----------
        // System calls Swift cannot reach without _GNU_SOURCE: eventfd, poll, mmap, fallocate, statx,
        // block-device ioctls, thread names, and the barriers of shared rings.
        .target(name: "CSys", cSettings: gnuSource),
        // The VDUSE uapi (our own copy) and one function per ioctl.
        .target(name: "CVDUSE", cSettings: gnuSource),
        // liburing and libaio (kept out of the public header's includes).
        .target(name: "CAsyncIO", cSettings: gnuSource,
                linkerSettings: [.linkedLibrary("uring"), .linkedLibrary("aio")]),
        // libzstd (Debian libzstd-dev).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd"),
        // libcurl and OpenSSL digests behind typed C wrappers (Debian libcurl4-openssl-dev, libssl-dev).
        .target(name: "CRemote", cSettings: gnuSource,
                linkerSettings: [.linkedLibrary("curl"), .linkedLibrary("crypto")]),
        // ---- Swift layers, each depending only on those above it ------------------------------------
        // The one syscall wrapper (errno + EINTR), eventfds, named threads, locks ThreadSanitizer sees,
        // clocks, byte formatting, iovec cursors, the sharded chunk cache and XXH64.
        .target(name: "SystemSupport", dependencies: [
            "CSys", .product(name: "SystemPackage", package: "swift-system"),
        ]),
        // Split virtqueues over an abstract guest memory: no syscalls, no VDUSE.
        .target(name: "VirtioCore", dependencies: ["CSys"]),
        // virtio-blk: request parsing, config space, features.
        .target(name: "VirtioBlk", dependencies: ["VirtioCore"]),
        // The backend seam (prepare/submit/reap by tag), the file engines, memory and null backends.
        .target(name: "BlockBackends", dependencies: [
            "CAsyncIO", "CSys", "SystemSupport", .product(name: "Logging", package: "swift-log"),
        ]),
        // The writable overlay (sparse file + crash-safe allocation map) shared by image backends,
        // and the image errors and positional file I/O they share.
        .target(name: "ImageOverlay", dependencies: ["BlockBackends", "SystemSupport", "CSys"]),
        // zstd seekable images: format, packer, verifier, and the compressed backend.
        .target(name: "ZstdImage", dependencies: ["CZstd", "BlockBackends", "ImageOverlay", "SystemSupport"]),
        // Remote images (HTTP/S3): range fetcher, S3 signing, memory + disk chunk cache, the remote backend.
        .target(name: "RemoteImage", dependencies: [
            "CRemote", "CSys", "BlockBackends", "ImageOverlay", "ZstdImage", "SystemSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The one entry point that opens any backend this package ships from a spec.
        .target(name: "StandardBackends", dependencies: ["BlockBackends", "ZstdImage", "RemoteImage"]),
        // Per-queue workers: drain, parse, submit, reap, publish, notify.
        .target(name: "BlockEngine", dependencies: [
            "VirtioCore", "VirtioBlk", "BlockBackends", "SystemSupport", "CSys",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The VDUSE device of any virtio type: control fd, messages, IOTLB, lifecycle; queues are
        // served by a device model's per-queue services (VirtioDeviceModel / VirtqueueService).
        .target(name: "VDUSEDevice", dependencies: [
            "CVDUSE", "CSys", "SystemSupport", "VirtioCore",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // virtio-blk over VDUSE: the device model, a queue service per QueueWorker, VDUSEBlockDevice.
        .target(name: "VDUSEBlk", dependencies: [
            "VDUSEDevice", "BlockEngine", "VirtioBlk", "BlockBackends", "VirtioCore",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The `--metrics` exporter: per-queue counters and backend statistics copied into a
        // Prometheus registry on scrape, served by a small HTTP/1.x responder on its own thread.
        .target(name: "MetricsExporter", dependencies: [
            "BlockEngine", "BlockBackends", "SystemSupport", "CSys",
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // Driver side of split rings in ordinary memory, for tests, benchmarks and fuzzers.
        .target(name: "VirtioDriverSim", dependencies: ["VirtioCore", "VirtioBlk", "SystemSupport", "CSys"]),
        .executableTarget(name: "vduse-blk", dependencies: [
            "VDUSEBlk", "VDUSEDevice", "BlockBackends", "StandardBackends", "VirtioBlk", "ImageOverlay", "ZstdImage",
            "RemoteImage", "SystemSupport", "MetricsExporter", "BlockEngine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Benchmarks: allocation counter (interposes malloc) and the engine-alone benchmark.
        .target(name: "CMallocCounter"),
        .executableTarget(name: "engine-bench", dependencies: [
            "BlockEngine", "BlockBackends", "VirtioBlk", "VirtioCore", "VirtioDriverSim", "CMallocCounter", "CSys", "SystemSupport",
            "ZstdImage",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // One copy of what the backend tests share: temp directories, aligned buffers, byte
        // patterns and a seeded RNG, file helpers, a QueueBackend driver, and the backend
        // conformance suite every backend's test case runs; a backend failing on demand and a log capture.
        .target(name: "TestSupport", dependencies: [
            "BlockBackends", "SystemSupport", .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/TestSupport"),
        .testTarget(name: "VirtioCoreTests", dependencies: ["VirtioCore", "VirtioBlk", "VirtioDriverSim", "BlockBackends", "SystemSupport"]),
        .testTarget(name: "BlockBackendsTests", dependencies: ["BlockBackends", "SystemSupport", "CSys", "TestSupport"]),
        .testTarget(name: "ZstdImageTests", dependencies: [
            "ZstdImage", "ImageOverlay", "BlockBackends", "SystemSupport", "TestSupport",
        ]),
        .testTarget(name: "RemoteImageTests", dependencies: [
            "RemoteImage", "BlockBackends", "ImageOverlay", "ZstdImage", "CRemote", "SystemSupport", "TestSupport",
        ]),
        .testTarget(name: "BlockEngineTests", dependencies: [
            "BlockEngine", "BlockBackends", "VirtioBlk", "VirtioCore", "VirtioDriverSim", "VDUSEDevice", "VDUSEBlk",
            "ZstdImage", "ImageOverlay", "SystemSupport", "CSys", "CMallocCounter", "TestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The exporter: scraped over real TCP, text parsed; hostile HTTP clients.
        .testTarget(name: "MetricsExporterTests", dependencies: [
            "MetricsExporter", "BlockEngine", "BlockBackends", "VirtioBlk", "VirtioCore", "VirtioDriverSim",
            "SystemSupport", "TestSupport",
        ]),
        // The command line's validation (hostile arguments get a usage error, not a trap).
        .testTarget(name: "CLITests", dependencies: [
            "vduse-blk", "BlockEngine", "BlockBackends", "StandardBackends",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // ---- Fuzzing (issue 7; see Fuzz/README.md) -------------------------------------------------
        // Harnesses and invariants; fuzz-* are libFuzzer binaries when built by scripts/fuzz.sh and
        // input replayers otherwise; FuzzRegressionTests replays the corpora and every past finding.
        .target(name: "FuzzHarness", dependencies: [
            "BlockEngine", "BlockBackends", "VirtioBlk", "VirtioCore", "VirtioDriverSim", "VDUSEDevice", "VDUSEBlk",
            "CVDUSE", "CSys",
            "ImageOverlay", "ZstdImage", "RemoteImage", "SystemSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "fuzz-queue", dependencies: ["FuzzHarness"]),
        .executableTarget(name: "fuzz-control", dependencies: ["FuzzHarness"]),
        .executableTarget(name: "fuzz-parse", dependencies: ["FuzzHarness"]),
        .executableTarget(name: "fuzz-zstd", dependencies: ["FuzzHarness"]),
        .executableTarget(name: "fuzz-remote", dependencies: ["FuzzHarness"]),
        .executableTarget(name: "fuzz-overlay", dependencies: ["FuzzHarness"]),
        .executableTarget(name: "fuzz-crash", dependencies: ["FuzzHarness"]),
        .testTarget(name: "FuzzRegressionTests", dependencies: [
            "FuzzHarness", "BlockBackends", "ImageOverlay", "ZstdImage", "RemoteImage", "SystemSupport",
        ]),
        // ---- end of fuzzing block --------------------------------------------------------------------
    ],
    swiftLanguageModes: [.v6]
)
