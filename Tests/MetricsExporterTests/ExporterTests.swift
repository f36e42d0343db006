import BlockBackends
import BlockEngine
import Foundation
import Glibc
import Logging
@testable import MetricsExporter
import SystemSupport
import TestSupport
import VirtioBlk
import VirtioCore
import VirtioDriverSim
import XCTest

/// Real queue workers driven by a simulated driver, one per queue, for the exporter's tests.
final class SimDevice {
    let memory = SimulatedGuestMemory(iova: 0x1_0000_0000, size: 32 << 20)
    var drivers: [SimulatedDriver] = []
    var builders: [BlkRequestBuilder] = []
    var workers: [QueueWorker<SimulatedGuestMemory>] = []

    init(backend: any BlockBackendFactory, queues: Int) throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let params = BlkDeviceParameters(capacityBytes: backend.geometry.capacityBytes, serial: "m", numQueues: UInt16(queues),
                                         queueSize: 64, discard: true, writeZeroes: true)
        let sink = CountingInterruptSink(queues: queues)
        for q in 0..<queues {
            let d = SimulatedDriver(memory: memory, size: 64, eventIdx: true)
            drivers.append(d)
            builders.append(BlkRequestBuilder(driver: d))
            let w = try QueueWorker(config: QueueWorkerConfig(queueIndex: q, addresses: d.addresses, features: params.offeredFeatures),
                                    memory: memory, backend: try backend.makeQueueBackend(queueIndex: q, depth: 64),
                                    parameters: params, sink: sink, kickFD: d.kickFD, logger: logger)
            workers.append(w)
            w.start()
        }
    }

    func stop() { for w in workers { w.control.stop() } }

    /// Runs requests made by `make` on queue `q`, `n` at a time, until `total` are done.
    func drive(_ q: Int, total: Int, batch: Int = 8, _ make: (BlkRequestBuilder, Int) -> SimBlkRequest?) {
        var done = 0
        while done < total {
            let n = min(batch, total - done)
            for i in 0..<n { XCTAssertNotNil(make(builders[q], done + i)) }
            _ = drivers[q].kick(force: true)
            XCTAssertEqual(drivers[q].waitUsed(count: n, timeoutMs: 5000).count, n)
            done += n
        }
    }

    var counters: [QueueCounters] { workers.map(\.counters) }
}

final class ExporterTests: XCTestCase {
    func start(_ sources: [DeviceMetricsSource], limits: MetricsHTTPServer.Limits = .init(),
               address: String = "127.0.0.1:0") throws -> MetricsHTTPServer {
        let server = try MetricsHTTPServer(address: MetricsAddress(address)!, collector: MetricsCollector(devices: sources),
                                           limits: limits)
        try server.start()
        return server
    }

    func scrape(_ server: MetricsHTTPServer, file: StaticString = #filePath, line: UInt = #line) throws -> Exposition {
        let r = try XCTUnwrap(RawHTTPClient.get(port: server.port), "scrape answered", file: file, line: line)
        XCTAssertEqual(r.status, 200, file: file, line: line)
        XCTAssertEqual(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8", file: file, line: line)
        XCTAssertEqual(r.headers["content-length"], String(r.body.utf8.count), file: file, line: line)
        return try Exposition(r.body)
    }

    func testScrapeOverTCPMatchesTheRequestsDriven() throws {
        let mem = try MemoryBackendFactory(capacityBytes: 8 << 20)
        let dev = try SimDevice(backend: mem, queues: 2)
        defer { dev.stop() }
        let bad = try SimDevice(backend: FaultyBackendFactory(failures: [.write: -ENOSPC]), queues: 1)
        defer { bad.stop() }
        dev.drive(0, total: 40) { b, i in b.write(sector: UInt64(i * 8), bytes: pattern(4096, seed: UInt8(i & 0xff))) }
        dev.drive(0, total: 25) { b, i in b.read(sector: UInt64(i * 8), length: 4096) }
        dev.drive(1, total: 30) { b, i in b.read(sector: UInt64(i), length: 1024) }
        dev.drive(1, total: 3) { b, _ in b.bare(type: BlkRequestType.flush) }
        dev.drive(1, total: 2) { b, _ in b.getID() }
        bad.drive(0, total: 6) { b, i in b.write(sector: UInt64(i), bytes: pattern(512, seed: 1)) }
        bad.drive(0, total: 4) { b, i in b.read(sector: UInt64(i), length: 512) }

        let server = try start([
            DeviceMetricsSource(name: "vd0", queues: dev.counters, served: { true },
                                backendStatistics: { [("hits_memory", 7), ("fetch_latency_avg_us", 12)] }),
            DeviceMetricsSource(name: "bad", queues: bad.counters, served: { true }, backendStatistics: { nil }),
        ])
        defer { server.stop() }
        let e = try scrape(server)
        let q0 = ["device": "vd0", "queue": "0"], q1 = ["device": "vd0", "queue": "1"]
        XCTAssertEqual(e.value("vduse_blk_requests_total", q0.merging(["type": "write"]) { a, _ in a }), 40)
        XCTAssertEqual(e.value("vduse_blk_requests_total", q0.merging(["type": "read"]) { a, _ in a }), 25)
        XCTAssertEqual(e.value("vduse_blk_requests_total", q1.merging(["type": "read"]) { a, _ in a }), 30)
        XCTAssertEqual(e.value("vduse_blk_requests_total", q1.merging(["type": "flush"]) { a, _ in a }), 3)
        XCTAssertEqual(e.value("vduse_blk_requests_total", q1.merging(["type": "get_id"]) { a, _ in a }), 2)
        XCTAssertEqual(e.value("vduse_blk_written_bytes_total", q0), 40 * 4096)
        XCTAssertEqual(e.value("vduse_blk_read_bytes_total", q0), 25 * 4096)
        XCTAssertEqual(e.value("vduse_blk_read_bytes_total", q1), 30 * 1024)
        XCTAssertEqual(e.sum("vduse_blk_request_errors_total", ["device": "vd0"]), 0)
        XCTAssertEqual(e.value("vduse_blk_in_flight_requests", q0), 0)
        XCTAssertEqual(e.value("vduse_blk_up", ["device": "vd0"]), 1)
        XCTAssertEqual(e.value("vduse_blk_backend_statistic", ["device": "vd0", "name": "hits_memory"]), 7)
        XCTAssertEqual(e.value("vduse_blk_backend_statistic", ["device": "vd0", "name": "fetch_latency_avg_us"]), 12)
        // The failing device: errors by type and the errno.
        let b0 = ["device": "bad", "queue": "0"]
        XCTAssertEqual(e.value("vduse_blk_request_errors_total", b0.merging(["type": "write"]) { a, _ in a }), 6)
        XCTAssertEqual(e.value("vduse_blk_request_errors_total", b0.merging(["type": "read"]) { a, _ in a }), 0)
        XCTAssertEqual(e.value("vduse_blk_requests_total", b0.merging(["type": "write"]) { a, _ in a }), 6)
        XCTAssertEqual(e.value("vduse_blk_last_error_errno", b0), Double(ENOSPC))
        XCTAssertEqual(e.value("vduse_blk_written_bytes_total", b0), 0)

        // Types, and the histogram: cumulative buckets ending in +Inf == count == requests of the queue.
        XCTAssertEqual(e.types["vduse_blk_requests_total"], "counter")
        XCTAssertEqual(e.types["vduse_blk_service_time_seconds"], "histogram")
        XCTAssertEqual(e.types["vduse_blk_up"], "gauge")
        for (labels, counters) in [(q0, dev.counters[0]), (q1, dev.counters[1]), (b0, bad.counters[0])] {
            let snap = counters.snapshot()
            let count = try XCTUnwrap(e.value("vduse_blk_service_time_seconds_count", labels))
            XCTAssertEqual(count, Double(snap.completed))
            XCTAssertEqual(count, e.sum("vduse_blk_requests_total", labels))
            let buckets = e.samples.filter { s in s.name == "vduse_blk_service_time_seconds_bucket" && labels.allSatisfy { s.labels[$0.key] == $0.value } }
            XCTAssertEqual(buckets.count, QueueCounters.bucketBoundsNanos.count + 1)
            XCTAssertEqual(buckets.last?.labels["le"], "+Inf")
            XCTAssertEqual(buckets.last?.value, count)
            XCTAssertEqual(buckets.map(\.value), buckets.map(\.value).sorted(), "cumulative")
            // Each bucket holds exactly what the queue counted under its bound.
            var cumulative: UInt64 = 0
            for (i, b) in buckets.dropLast().enumerated() {
                cumulative += snap.buckets[i]
                XCTAssertEqual(b.value, Double(cumulative), "le=\(b.labels["le"] ?? "?")")
                XCTAssertEqual(Double(b.labels["le"] ?? "") ?? -1, Double(QueueCounters.bucketBoundsNanos[i]) / 1e9, accuracy: 1e-12)
            }
            let sum = try XCTUnwrap(e.value("vduse_blk_service_time_seconds_sum", labels))
            XCTAssertEqual(sum, Double(snap.serviceNanos) / 1e9, accuracy: 1e-9 + Double(snap.serviceNanos) / 1e9 * 1e-9)
        }

        // More requests, scraped again: counters grow by exactly that.
        dev.drive(0, total: 9) { b, i in b.read(sector: UInt64(i), length: 512) }
        let e2 = try scrape(server)
        XCTAssertEqual(e2.value("vduse_blk_requests_total", q0.merging(["type": "read"]) { a, _ in a }), 34)
        XCTAssertEqual(e2.value("vduse_blk_service_time_seconds_count", q0), 74)
        XCTAssertEqual(e2.value("vduse_blk_read_bytes_total", q0), 25 * 4096 + 9 * 512)
    }

    func testPromtoolAcceptsTheExposition() throws {
        let candidates: [String] = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        guard let promtool = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("promtool not installed (Debian package prometheus; scripts/setup-host.sh installs it)")
        }
        let dev = try SimDevice(backend: try MemoryBackendFactory(capacityBytes: 8 << 20), queues: 2)
        defer { dev.stop() }
        dev.drive(0, total: 20) { b, i in b.write(sector: UInt64(i * 8), bytes: pattern(4096, seed: 3)) }
        dev.drive(1, total: 20) { b, i in b.read(sector: UInt64(i * 8), length: 4096) }
        let server = try start([DeviceMetricsSource(name: "vd0", queues: dev.counters, served: { true },
                                                    backendStatistics: { [("hits_memory", 1), ("odd name \"x\"", 2)] })])
        defer { server.stop() }
        let body = try XCTUnwrap(RawHTTPClient.get(port: server.port)).body
        let p = Process()
        p.executableURL = URL(fileURLWithPath: promtool)
        p.arguments = ["check", "metrics"]
        let input = Pipe(), output = Pipe()
        p.standardInput = input
        p.standardOutput = output
        p.standardError = output
        try p.run()
        input.fileHandleForWriting.write(Data(body.utf8))
        try input.fileHandleForWriting.close()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "promtool check metrics: \(said)")
        XCTAssertEqual(said.trimmingCharacters(in: .whitespacesAndNewlines), "", "no lint findings")
    }

    func testUpFollowsServedAndNeedsReset() throws {
        let dev = try SimDevice(backend: try MemoryBackendFactory(capacityBytes: 1 << 20), queues: 1)
        defer { dev.stop() }
        let served = Guarded(true)
        let server = try start([DeviceMetricsSource(name: "d", queues: dev.counters, served: { served.withLock { $0 } },
                                                    backendStatistics: { nil })])
        defer { server.stop() }
        XCTAssertEqual(try scrape(server).value("vduse_blk_up", ["device": "d"]), 1)
        served.withLock { $0 = false }
        XCTAssertEqual(try scrape(server).value("vduse_blk_up", ["device": "d"]), 0)
        served.withLock { $0 = true }
        // A ring the worker cannot trust: avail.idx jumps past the queue size -> NEEDS_RESET.
        dev.drivers[0].forceAvailIndex(1000)
        _ = dev.drivers[0].kick(force: true)
        for _ in 0..<300 where !dev.workers[0].control.needsReset { usleep(10_000) }
        XCTAssertTrue(dev.workers[0].control.needsReset)
        XCTAssertEqual(try scrape(server).value("vduse_blk_up", ["device": "d"]), 0)
    }

    func testOtherPathsMethodsAndGarbageGetErrorsAndTheServerStaysUp() throws {
        let dev = try SimDevice(backend: try MemoryBackendFactory(capacityBytes: 1 << 20), queues: 1)
        defer { dev.stop() }
        var limits = MetricsHTTPServer.Limits()
        limits.maxHead = 1024
        let server = try start([DeviceMetricsSource(name: "d", queues: dev.counters, served: { true }, backendStatistics: { nil })],
                               limits: limits)
        defer { server.stop() }
        XCTAssertEqual(RawHTTPClient.get(port: server.port, path: "/")?.status, 404)
        XCTAssertEqual(RawHTTPClient.get(port: server.port, path: "/metricsx")?.status, 404)
        XCTAssertEqual(RawHTTPClient.get(port: server.port, path: "/metrics?x=1")?.status, 200)
        XCTAssertEqual(RawHTTPClient.get(port: server.port, method: "POST")?.status, 405)
        let head = RawHTTPClient.get(port: server.port, method: "HEAD")
        XCTAssertEqual(head?.status, 200)
        XCTAssertEqual(head?.body, "")
        let hostile: [[UInt8]] = [
            Array("garbage\r\n\r\n".utf8),
            Array("GET /metrics\r\n\r\n".utf8),
            Array("GET /metrics HTTP/9.9\r\n\r\n".utf8),
            Array("GET metrics HTTP/1.1\r\n\r\n".utf8),
            [0xff, 0xfe, 0x00, 0x0a, 0x0a],
            Array("GET /\u{7f}metrics HTTP/1.1\n\n".utf8),
            [UInt8](repeating: 0x41, count: 200_000),
            Array(("GET /metrics HTTP/1.1\r\nX: " + String(repeating: "y", count: 5000) + "\r\n\r\n").utf8),
        ]
        for raw in hostile {
            let c = try XCTUnwrap(RawHTTPClient(port: server.port))
            c.send(raw)
            let reply = try XCTUnwrap(c.readAll(), "the server answers and closes")
            let status = RawHTTPClient.parse(reply)?.status
            XCTAssertTrue([400, 431].contains(status ?? 0), "\(raw.prefix(20)) -> \(String(describing: status))")
        }
        XCTAssertEqual(try scrape(server).value("vduse_blk_up", ["device": "d"]), 1, "still serving after the abuse")
    }

    func testSlowClientsTimeOutAndTheConnectionCapHolds() throws {
        let dev = try SimDevice(backend: try MemoryBackendFactory(capacityBytes: 1 << 20), queues: 1)
        defer { dev.stop() }
        var limits = MetricsHTTPServer.Limits()
        limits.connectionMillis = 400
        limits.maxConnections = 3
        let server = try start([DeviceMetricsSource(name: "d", queues: dev.counters, served: { true }, backendStatistics: { nil })],
                               limits: limits)
        defer { server.stop() }
        // Slowloris: a byte at a time, never finishing the head.
        let slow = try XCTUnwrap(RawHTTPClient(port: server.port))
        slow.send("GET /met")
        let idle = try XCTUnwrap(RawHTTPClient(port: server.port))
        // While they dangle, a real scrape still works (one slot left).
        XCTAssertNoThrow(try scrape(server))
        // Fill the cap: the next one is turned away at once.
        let third = try XCTUnwrap(RawHTTPClient(port: server.port))
        third.send("GET /m")
        usleep(50_000)
        let turned = try XCTUnwrap(RawHTTPClient(port: server.port))
        XCTAssertEqual(RawHTTPClient.parse(turned.readAll(timeout: 2) ?? [])?.status, 503)
        let t0 = monotonicSeconds()
        slow.send("ri")
        XCTAssertNotNil(slow.readAll(timeout: 3), "the slow client is closed")
        XCTAssertNotNil(idle.readAll(timeout: 3), "the idle client is closed")
        XCTAssertLessThan(monotonicSeconds() - t0, 2.5)
        // Slots free again.
        XCTAssertEqual(try scrape(server).value("vduse_blk_up", ["device": "d"]), 1)
        XCTAssertGreaterThanOrEqual(server.scrapes, 2)
    }

    func testIPv6Loopback() throws {
        let dev = try SimDevice(backend: try MemoryBackendFactory(capacityBytes: 1 << 20), queues: 1)
        defer { dev.stop() }
        let server: MetricsHTTPServer
        do {
            server = try start([DeviceMetricsSource(name: "d", queues: dev.counters, served: { true }, backendStatistics: { nil })],
                               address: "[::1]:0")
        } catch {
            throw XCTSkip("no IPv6 loopback here: \(error)")
        }
        defer { server.stop() }
        let r = RawHTTPClient.get(port: server.port, ipv6: true)
        XCTAssertEqual(r?.status, 200)
        XCTAssertNoThrow(try Exposition(r?.body ?? "x"))
    }

    func testATakenPortIsAClearErrorAndStopFreesIt() throws {
        let first = try MetricsHTTPServer(address: MetricsAddress("127.0.0.1:0")!, collector: MetricsCollector())
        try first.start()
        XCTAssertThrowsError(try MetricsHTTPServer(address: MetricsAddress("127.0.0.1:\(first.port)")!, collector: MetricsCollector())) {
            XCTAssertTrue("\($0)".contains("Address already in use"), "\($0)")
        }
        // After stop (a hand-over to the next daemon) the same port binds at once.
        first.stop()
        let next = try MetricsHTTPServer(address: MetricsAddress("127.0.0.1:\(first.port)")!, collector: MetricsCollector())
        try next.start()
        XCTAssertEqual(RawHTTPClient.get(port: next.port)?.status, 200)
        next.stop()
        XCTAssertThrowsError(try next.start(), "a stopped exporter does not start again")
    }
}
