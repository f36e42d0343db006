import ArgumentParser
import BlockBackends
import Glibc
import Logging
import BlockEngine
import MetricsExporter
import RemoteImage
import StandardBackends
import VDUSEBlk
import VDUSEDevice
import VirtioBlk

/// `vduse-blk create`: builds the device from validated options and serves it
/// in the foreground until SIGINT/SIGTERM.
struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a virtio-blk device and serve it in the foreground.")

    @Argument(help: "Device name (also the vdpa device name).")
    var name: String

    @Option(help: ArgumentHelp(
        "Storage backend: file:PATH (a raw image file or a block device), zstd:IMAGE[,overlay=PATH][,cache=SIZE], or a remote image http(s)://HOST/PATH or s3://BUCKET/KEY[,OPTION=VALUE...].",
        discussion: "Remote options: \(RemoteOptions.knownOptions.joined(separator: ", ")). S3 credentials, region and endpoint come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL."))
    var backend: String

    @Flag(help: "Remote images: warm the whole image into the caches in the background.")
    var prefetch = false

    @Option(name: .customLong("prefetch-rate"), help: "Remote images: bytes per second --prefetch may fetch (e.g. 50M).")
    var prefetchRate: String = "64M"

    @Option(name: .customLong("record-trace"), help: ArgumentHelp(
        "Remote images: write the order in which the guest first reads each chunk to PATH when the daemon stops.",
        valueName: "path"))
    var recordTrace: String?

    @Option(name: .customLong("prefetch-trace"), help: ArgumentHelp(
        "Remote images: fetch the chunks a recorded trace lists, in its order, ahead of the guest (a missing or mismatched trace is logged and skipped).",
        valueName: "path"))
    var prefetchTrace: String?

    @Option(help: "Image size (e.g. 256M, 10G): creates a sparse file if missing, grows a smaller one.")
    var size: String?

    @Option(help: "Number of virtqueues (1-16; default: number of CPUs, at most 16).")
    var queues: Int?

    @Option(name: .customLong("queue-size"), help: "Entries per virtqueue (power of two, 2-1024).")
    var queueSize: Int = 256

    @Option(name: .customLong("block-size"), help: "Logical block size: 512 or 4096.")
    var blockSize: UInt32 = 512

    @Flag(help: "Expose the device read-only.")
    var readonly = false

    @Option(help: "Serial number returned by GET_ID (up to 20 ASCII characters).")
    var serial: String?

    @Option(help: "File I/O engine: uring, aio or sync.")
    var engine: String = "uring"

    @Flag(help: "Open the image with O_DIRECT.")
    var direct = false

    @Option(name: .customLong("poll-us"), help: "Busy-poll each queue this many microseconds before sleeping.")
    var pollMicros: Int = 0

    @Option(help: ArgumentHelp("How queue threads sleep: poll (default: poll() on the kick, wake and completion fds) or ring (inside io_uring, uring engine only).",
                               visibility: .hidden))
    var wait: String = "poll"

    @Option(help: "Bounce pages of a virtio-vdpa device: kernel (default) or user (daemon memory, VDUSE_IOTLB_REG_UMEM).")
    var bounce: String = "kernel"

    @Flag(help: "Bind the device with `vdpa dev add` once ready, unbind on exit.")
    var attach = false

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"

    // Issue 14 benchmark switch (A/B of the in-flight log's cost; see CreateAdopt.swift).
    @Flag(name: .customLong("no-inflight-log"), help: ArgumentHelp(
        "Benchmarks only: serve without the in-flight log; the device cannot be adopted after a crash or SIGUSR2.",
        visibility: .hidden))
    var noInflightLog = false

    /// QoS limits (`--limit-*`); `vduse-blk set` changes them while the device runs.
    @OptionGroup(title: "QoS limits")
    var qos: QoSOptions

    @Option(help: "Serve Prometheus metrics at http://ADDRESS/metrics (IP:PORT or [IPv6]:PORT, e.g. 127.0.0.1:9101).")
    var metrics: String?
    @Option(name: .customLong("log-format"), help: "text (default) or json (one object per line, for collectors).")
    var logFormat: LogFormat = .text

    func validate() throws {
        try validateDeviceName(name)
        if let q = queues, !(1...16).contains(q) { throw ValidationError("--queues must be 1-16") }
        guard (2...1024).contains(queueSize), queueSize & (queueSize - 1) == 0 else {
            throw ValidationError("--queue-size must be a power of two from 2 to 1024")
        }
        guard blockSize == 512 || blockSize == 4096 else { throw ValidationError("--block-size must be 512 or 4096") }
        if let s = serial {
            guard s.utf8.count <= 20, s.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else {
                throw ValidationError("--serial must be at most 20 printable ASCII characters")
            }
        }
        guard FileEngine(rawValue: engine) != nil else { throw ValidationError("--engine must be uring, aio or sync") }
        guard wait == "ring" || wait == "poll" else { throw ValidationError("--wait must be ring or poll") }
        guard bounce == "kernel" || bounce == "user" else { throw ValidationError("--bounce must be kernel or user") }
        guard (0...1_000_000).contains(pollMicros) else { throw ValidationError("--poll-us must be 0-1000000") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        if recordTrace != nil || prefetchTrace != nil {
            let kind = backend.prefix { $0 != ":" }
            guard ["http", "https", "s3"].contains(String(kind)) else {
                throw ValidationError("--record-trace and --prefetch-trace apply to remote images (http://, https://, s3://) only")
            }
        }
        if let m = metrics, MetricsAddress(m) == nil {
            throw ValidationError("--metrics must be IP:PORT or [IPv6]:PORT with a numeric address (e.g. 127.0.0.1:9101)")
        }
    }

    func run() throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        logFormat.bootstrap(level: level)
        let logger = Logger(label: "vduse-blk").forDevice(name)
        do {
            try serve(logger: logger)
        } catch let e as CLIFailure {
            printError(e.message)
            throw ExitCode.failure
        }
    }

    func serve(logger: Logger) throws {
        // Signals are taken by one thread; blocked before any other thread starts.
        // SIGUSR2 (once running) hands the device over to the next daemon (upgrade).
        let signals = ShutdownSignals()

        // Fail on a missing VDUSE before touching (or creating) the image.
        do { _ = try VDUSEControl() } catch { throw CLIFailure(message: error.description) }
        try refuseIfServedElsewhere()
        try checkBackendOfExistingDevice(logger: logger)
        // Bound before the device exists: a taken port fails here, touching nothing.
        let exporter = try bindMetricsExporter()

        let factory: any BlockBackendFactory
        let parameters: BlkDeviceParameters
        do throws(BackendError) {
            let sizeBytes = try size.map { s throws(BackendError) in try ByteSize.parse(s) }
            if let b = sizeBytes, b == 0 || b % UInt64(blockSize) != 0 {
                throw BackendError.badSize("--size must be a positive multiple of the block size \(blockSize)")
            }
            factory = try BackendCatalog.standard.open(backend, options: BackendOpenOptions(
                size: sizeBytes, readOnly: readonly, direct: direct, engine: FileEngine(rawValue: engine)!,
                prefetchRate: prefetch ? prefetchRate : nil, recordTrace: recordTrace, prefetchTrace: prefetchTrace,
                logger: logger))
            for note in factory.notes {
                switch note.level {
                case .info: logger.info("\(note.text)")
                case .warning: logger.warning("\(note.text)")
                }
            }
            let g = factory.geometry
            guard g.capacityBytes >= UInt64(blockSize) else {
                throw BackendError.badSize("image is smaller than one block")
            }
            let nq = queues ?? min(16, max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
            parameters = BlkDeviceParameters(
                capacityBytes: g.capacityBytes / UInt64(blockSize) * UInt64(blockSize), blockSize: blockSize,
                readOnly: readonly || g.readOnly, serial: serial ?? name, numQueues: UInt16(nq),
                queueSize: UInt16(queueSize), discard: g.supportsDiscard, writeZeroes: g.supportsWriteZeroes,
                requiredAlignment: max(g.requiredAlignment, blockSize))
        } catch {
            throw CLIFailure(message: error.description)
        }

        let device: VDUSEBlockDevice
        var adopted = false
        signals.arm()
        do {
            device = try VDUSEBlockDevice(name: name, parameters: parameters, backend: factory,
                                          pollMicros: pollMicros, ringWait: wait == "ring",
                                          userBounce: bounce == "user", logger: logger)
            try applyLimits(to: device, logger: logger)   // before any queue starts
            adopted = try createOrAdopt(device, logger: logger)
        } catch {
            throw CLIFailure(message: error.description)
        }
        if attach, !(adopted && VdpaTool.isBound(name: name)) {
            do { try device.attach() } catch {
                device.shutdown()
                throw CLIFailure(message: error.description)
            }
        }
        factory.startBackgroundWork()
        let served = ServedFlag()
        let publisher = StatsPublisher(source: factory, name: name, failures: QueueFailureReporter(
            device: name, queues: device.queueCounters, logger: logger))
        publisher.start()
        let controlServer = startControlServer(device: device, factory: factory, logger: logger)
        startMetricsExporter(exporter, device: device, factory: factory, served: served, logger: logger)
        let sig = signals.wait()
        served.set(false)
        controlServer?.stop()
        // Its port is free before the device is handed over or destroyed: the next daemon binds it.
        exporter?.stop()
        if sig == SIGUSR2 {
            logger.info("SIGUSR2: draining and handing \(name) over; start the new daemon with the same options")
            device.handOver()
        } else {
            logger.info("signal \(sig): shutting down")
            device.shutdown()
        }
        publisher.stop()
        factory.shutdown()
    }
}

/// A user-facing failure: printed as one line, exit status 1.
struct CLIFailure: Error {
    var message: String
}

/// The one device-name rule (`VDUSEControl.validate`: names become paths
/// under /dev/vduse and /run/vduse-blk) as a usage error.
func validateDeviceName(_ name: String) throws {
    do { try VDUSEControl.validate(name: name) } catch { throw ValidationError(error.description) }
}

/// Writes one line to standard error.
func printError(_ message: String) {
    let line = "vduse-blk: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}
