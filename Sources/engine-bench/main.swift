// engine-bench: the queue engine alone, no kernel. Simulated drivers (one
// thread per queue) keep `batch` requests in flight against real QueueWorker
// threads over a null backend or a file backend on tmpfs, and the benchmark
// reports requests/s, requests per CPU-second of the queue threads, and heap
// allocations per request (malloc is interposed by CMallocCounter).
//
// Backend "zstd-ovl": a zstd image of zeroes with an overlay, both on tmpfs
// (writes only). "write" rewrites the same sectors every round (their map
// bits are set after the first: the steady state); "fresh-write" moves every
// round to sectors never written before, so every write sets new map bits
// (the overlay's worst case: each write also journals its range).
import BlockBackends
import BlockEngine
import CMallocCounter
import CSys
import Foundation
import Logging
import VirtioBlk
import VirtioCore
import VirtioDriverSim
import ZstdImage

struct Scenario {
    var backend: String
    var requestSize: Int
    var batch: Int
    var queues: Int
    var write: Bool
    /// Writes move to never-written sectors every round.
    var fresh = false
    /// Serve with an in-flight log in a MAP_SHARED tmpfs file (as the daemon does).
    var log = false
    /// One QoS limit (requests/s) shared by the queues; 0: a limiter without
    /// limits (as every daemon has); nil: no limiter at all.
    var limitIOPS: UInt64?
    var label: String {
        "\(backend) \(write ? (fresh ? "fresh-write" : "write") : "read") \(requestSize / 1024)k batch=\(batch) queues=\(queues)"
            + (log ? " log" : "") + (limitIOPS.map { " limit=\($0)" } ?? "")
    }
}

struct Result: Codable {
    var scenario: String
    var requests: Int
    var seconds: Double
    var requestsPerSecond: Double
    var queueThreadCPUSeconds: Double
    var requestsPerQueueCPUSecond: Double
    var allocationsPerRequest: Double
}

/// CPU seconds used so far by the threads named vq-*.
func queueThreadCPU() -> Double {
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    var total = 0.0
    guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return 0 }
    for t in tasks {
        guard let comm = try? String(contentsOfFile: "/proc/self/task/\(t)/comm", encoding: .utf8),
              comm.hasPrefix("vq-"),
              let stat = try? String(contentsOfFile: "/proc/self/task/\(t)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is state (field 3); utime, stime are fields 14 and 15.
        if fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) { total += (u + s) / ticks }
    }
    return total
}

/// One queue's driver: prebuilt chains, resubmitted in batches.
final class QueueDriver: @unchecked Sendable {
    let driver: SimulatedDriver
    var heads: [UInt16] = []
    var completed = 0
    /// Fresh writes: where each request's header lives, the next sector to use, the stride and the end.
    var headers: [UnsafeMutableRawPointer] = []
    var nextSector: UInt64 = 0
    let stride: UInt64
    let capacitySectors: UInt64

    init(memory: SimulatedGuestMemory, queueSize: UInt16, scenario s: Scenario, queueIndex: Int, capacity: UInt64) {
        driver = SimulatedDriver(memory: memory, size: queueSize, eventIdx: true)
        let builder = BlkRequestBuilder(driver: driver)
        let sectorsPerRequest = UInt64(s.requestSize / 512)
        stride = UInt64(s.queues) * sectorsPerRequest
        capacitySectors = capacity / 512
        nextSector = UInt64(queueIndex) * sectorsPerRequest
        for i in 0..<s.batch {
            let sector = UInt64((queueIndex * s.batch + i) * s.requestSize / 512) % (200 << 11)
            if s.fresh {
                // builder.write, keeping the header's address so each round can move it.
                let h = builder.header(type: BlkRequestType.write, sector: sector)
                let data = memory.allocate(UInt64(s.requestSize), alignment: 512)
                memory.write([UInt8](repeating: 0xa5, count: s.requestSize), at: data)
                let st = builder.status()
                let head = driver.add([SimBuffer(iova: h, length: 16, writable: false),
                                       SimBuffer(iova: data, length: UInt32(s.requestSize), writable: false),
                                       SimBuffer(iova: st, length: 1, writable: true)], indirect: false)
                heads.append(head!)
                headers.append(memory.pointer(h))
                continue
            }
            let r = s.write ? builder.write(sector: sector, bytes: [UInt8](repeating: 0xa5, count: s.requestSize))
                : builder.read(sector: sector, length: UInt32(s.requestSize))
            heads.append(r!.head)
        }
        // The builder published them once; take them back so the loop starts clean.
        driver.kick(force: true)
    }

    func warmAndDrain() {
        var got = 0
        while got < heads.count { got += driver.reapRecycled(); sched_yield() }
    }

    /// Keeps the batch in flight until `deadline` (CLOCK_MONOTONIC ns).
    func run(until deadline: UInt64) {
        let batch = heads.count
        while monotonicNanos() < deadline {
            for p in headers {
                p.storeBytes(of: nextSector.littleEndian, toByteOffset: 8, as: UInt64.self)
                nextSector += stride
                if nextSector >= capacitySectors { nextSector %= stride }
            }
            for h in heads { driver.resubmit(head: h) }
            driver.requestInterrupt(afterUsed: UInt16(batch - 1))
            driver.publish()
            driver.kick()
            var got = 0
            var spins = 0
            while got < batch {
                let n = driver.reapRecycled()
                got += n
                if n == 0 { spins += 1; if spins & 63 == 0 { sched_yield() } }
            }
            completed += batch
        }
    }
}

func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func run(_ s: Scenario, seconds: Double) throws -> Result {
    var capacity: UInt64 = 256 << 20
    let factory: any BlockBackendFactory
    // ENGINE_BENCH_DIR: where the image lives (default tmpfs; a disk file
    // system takes io_uring's real path instead of the inline copy).
    let dir = getenv("ENGINE_BENCH_DIR").map { String(cString: $0) } ?? "/dev/shm"
    let path = "\(dir)/vduse-engine-bench.img"
    let overlayPath = "\(dir)/vduse-engine-bench.overlay"
    if s.backend == "null" {
        factory = try NullBackendFactory(capacityBytes: capacity)
    } else if s.backend == "zstd-ovl" {
        // Fresh writes need room: 4 GiB of never-written sectors (sparse on tmpfs).
        capacity = s.fresh ? 4 << 30 : capacity
        factory = try zstdOverlayFactory(capacity: capacity, image: path, overlay: overlayPath)
    } else {
        factory = try FileBackendFactory(path: path, size: capacity, engine: FileEngine(rawValue: s.backend) ?? .uring)
    }
    defer { if s.backend != "null" { unlink(path); unlink(overlayPath) } }
    let queueSize: UInt16 = 256
    let memory = SimulatedGuestMemory(iova: 0x1_0000_0000, size: UInt64(s.queues) * UInt64(s.batch * (s.requestSize + 64) + 65536) + (1 << 20))
    let drivers = (0..<s.queues).map { QueueDriver(memory: memory, queueSize: queueSize, scenario: s, queueIndex: $0,
                                                    capacity: capacity) }
    let params = BlkDeviceParameters(capacityBytes: capacity, numQueues: UInt16(s.queues), queueSize: queueSize)
    let sink = CountingInterruptSink(queues: s.queues)
    var logger = Logger(label: "bench")
    logger.logLevel = .error
    var workers: [QueueWorker<SimulatedGuestMemory>] = []
    // --limit-iops: one QoS limiter shared by every queue, as the daemon has.
    let qos = try s.limitIOPS.map { try QoSLimiter(limits: QoSLimits(iops: $0)) }
    // The in-flight log: one page-aligned region per queue in a shared mapping of a tmpfs file.
    let regionBytes = InflightQueueLog.regionBytes(maxQueueSize: queueSize)
    let logPath = "/dev/shm/vduse-engine-bench.inflight"
    var logBase: UnsafeMutableRawPointer?
    if s.log {
        let fd = open(logPath, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0, ftruncate(fd, off_t(regionBytes * s.queues)) == 0 else { throw BenchError.log }
        var err: Int32 = 0
        logBase = vb_mmap_shared(fd, 0, regionBytes * s.queues, 1, &err)
        close(fd)
        guard logBase != nil else { throw BenchError.log }
    }
    defer {
        if let b = logBase { _ = vb_munmap(b, regionBytes * s.queues); unlink(logPath) }
    }
    for q in 0..<s.queues {
        let ringWait = ProcessInfo.processInfo.environment["ENGINE_BENCH_WAIT"] == "ring"
        var log: InflightQueueLog?
        if let b = logBase {
            let l = InflightQueueLog(base: b + q * regionBytes, maxQueueSize: queueSize)
            l.begin(queueIndex: UInt16(q), addresses: drivers[q].driver.addresses, startAvail: 0,
                    usedIdx: drivers[q].driver.usedIndex)
            log = l
        }
        let w = try QueueWorker(config: QueueWorkerConfig(queueIndex: q, addresses: drivers[q].driver.addresses,
                                                          features: params.offeredFeatures, ringWait: ringWait,
                                                          log: log, qos: qos),
                                memory: memory, backend: try factory.makeQueueBackend(queueIndex: q, depth: Int(queueSize)),
                                parameters: params, sink: sink, kickFD: drivers[q].driver.kickFD, logger: logger)
        workers.append(w)
        w.start()
    }
    for d in drivers { d.warmAndDrain() }

    // Warm-up, then the measured window.
    func window(_ secs: Double) -> (Int, Double, Double, UInt64) {
        for d in drivers { d.completed = 0 }
        // The driver threads are made (which allocates) before the counters
        // are read, and released together through a gate.
        let gate = DispatchSemaphore(value: 0)
        let done = DispatchGroup()
        let deadline = DeadlineBox()
        for d in drivers {
            done.enter()
            Thread { gate.wait(); d.run(until: deadline.value); done.leave() }.start()
        }
        usleep(20_000)
        let cpu0 = queueThreadCPU()
        let allocs0 = vb_malloc_count()
        let t0 = monotonicNanos()
        deadline.value = t0 + UInt64(secs * 1e9)
        for _ in drivers { gate.signal() }     // the semaphore publishes the value
        done.wait()
        let t1 = monotonicNanos()
        let allocs = vb_malloc_count() - allocs0
        let cpu = queueThreadCPU() - cpu0
        return (drivers.reduce(0) { $0 + $1.completed }, Double(t1 - t0) / 1e9, cpu, allocs)
    }
    _ = window(0.3)
    let (n, secs, cpu, allocs) = window(seconds)
    for w in workers { w.control.stop() }
    return Result(scenario: s.label, requests: n, seconds: secs, requestsPerSecond: Double(n) / secs,
                  queueThreadCPUSeconds: cpu, requestsPerQueueCPUSecond: cpu > 0 ? Double(n) / cpu : 0,
                  allocationsPerRequest: Double(allocs) / Double(max(n, 1)))
}

/// A zstd image of `capacity` zero bytes (1 MiB chunks) with a fresh overlay, both at the given paths.
func zstdOverlayFactory(capacity: UInt64, image: String, overlay: String) throws -> any BlockBackendFactory {
    let raw = image + ".raw"
    unlink(overlay)
    let fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0, ftruncate(fd, off_t(capacity)) == 0 else { throw BenchError.setup("cannot make \(raw)") }
    close(fd)
    defer { unlink(raw) }
    _ = try ImagePacker.pack(raw: raw, output: image,
                             options: PackOptions(chunkSize: 1 << 20, level: 1, threads: 2, overwrite: true))
    return try ZstdBackendFactory(options: ZstdBackendOptions(imagePath: image, overlayPath: overlay, cacheBytes: 8 << 20))
}

enum BenchError: Error { case setup(String), log }

/// The end of a measured window, set after the driver threads exist.
final class DeadlineBox: @unchecked Sendable {
    var value: UInt64 = 0
}

// MARK: - main

var seconds = 2.0
var jsonPath: String?
var filter: String?
var logMode = "off"
var rounds = 1
// (also from the environment, for scripts/bench-engine.sh runs: ENGINE_BENCH_LIMIT_IOPS=N)
var qosIOPS: UInt64? = ProcessInfo.processInfo.environment["ENGINE_BENCH_LIMIT_IOPS"].flatMap { UInt64($0) }
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch a {
    case "--seconds": seconds = Double(args.popFirst() ?? "") ?? seconds
    case "--json": jsonPath = args.popFirst()
    case "--only": filter = args.popFirst()
    case "--inflight-log": logMode = args.popFirst() ?? ""
    case "--rounds": rounds = max(1, Int(args.popFirst() ?? "") ?? 1)
    case "--limit-iops": qosIOPS = UInt64(args.popFirst() ?? "") ?? 0
    default:
        print("usage: engine-bench [--seconds S] [--json FILE] [--only SUBSTRING] [--inflight-log off|on|both] [--rounds N] [--limit-iops N]")
        print("  env ENGINE_BENCH_DIR: directory of the bench image (default /dev/shm, tmpfs)")
        print("  --limit-iops N: every scenario under one QoS limit of N requests/s shared by its queues")
        print("                  (0: a limiter with no limit, as in the daemon; default: no limiter)")
        print("  --inflight-log both: each scenario without and with the in-flight log, alternating, --rounds times")
        exit(2)
    }
}

var scenarios: [Scenario] = []
for backend in ["null", "uring"] {
    for size in [4096, 65536] {
        for batch in [1, 32] {
            for queues in [1, 4] {
                scenarios.append(Scenario(backend: backend, requestSize: size, batch: batch, queues: queues, write: false))
            }
        }
    }
}
scenarios.append(Scenario(backend: "uring", requestSize: 4096, batch: 32, queues: 1, write: true))
for queues in [1, 2] {
    for fresh in [false, true] {
        scenarios.append(Scenario(backend: "zstd-ovl", requestSize: 4096, batch: 32, queues: queues, write: true, fresh: fresh))
    }
}
if let f = filter { scenarios = scenarios.filter { $0.label.contains(f) } }
if let q = qosIOPS { scenarios = scenarios.map { var x = $0; x.limitIOPS = q; return x } }
switch logMode {
case "off": break
case "on": scenarios = scenarios.map { var x = $0; x.log = true; return x }
case "both":
    var alternated: [Scenario] = []
    for sc in scenarios {
        for _ in 0..<rounds {
            alternated.append(sc)
            var l = sc
            l.log = true
            alternated.append(l)
        }
    }
    scenarios = alternated
default:
    print("--inflight-log must be off, on or both")
    exit(2)
}

func pad(_ s: String, _ n: Int, left: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, n - s.count))
    return left ? s + fill : fill + s
}
print(pad("scenario", 44, left: true) + " " + pad("req/s", 12) + " " + pad("req/queue-cpu-s", 15) + " " + pad("allocs/req", 12))
var results: [Result] = []
for s in scenarios {
    do {
        let r = try run(s, seconds: seconds)
        results.append(r)
        print(pad(r.scenario, 44, left: true) + " " + pad(String(format: "%.0f", r.requestsPerSecond), 12) + " "
              + pad(String(format: "%.0f", r.requestsPerQueueCPUSecond), 15) + " "
              + pad(String(format: "%.4f", r.allocationsPerRequest), 12))
    } catch {
        print("\(s.label): failed: \(error)")
    }
}
if let p = jsonPath {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    try enc.encode(results).write(to: URL(fileURLWithPath: p))
}
