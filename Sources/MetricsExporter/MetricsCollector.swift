import BlockEngine
import Prometheus
import Synchronization

/// The Prometheus registry of the exporter and the metric handles in it,
/// brought up to date from each device's `QueueCounters` and backend
/// statistics on every `sync()` (a scrape, or the exporter's periodic tick):
/// counters grow by what the queues counted since the last sync, gauges take
/// the current value, histograms get the new observations. Owns the registry
/// and the last snapshot of every queue; every method takes its own lock, so
/// a scrape and a tick never interleave. Metric names: docs/metrics.md.
public final class MetricsCollector: Sendable {
    /// Metric names (docs/metrics.md).
    public enum Name {
        public static let up = "vduse_blk_up"
        public static let requests = "vduse_blk_requests_total"
        public static let errors = "vduse_blk_request_errors_total"
        public static let readBytes = "vduse_blk_read_bytes_total"
        public static let writtenBytes = "vduse_blk_written_bytes_total"
        public static let inFlight = "vduse_blk_in_flight_requests"
        public static let lastErrno = "vduse_blk_last_error_errno"
        public static let serviceTime = "vduse_blk_service_time_seconds"
        public static let backend = "vduse_blk_backend_statistic"
    }

    /// The registry's descriptor of `name` (`vduse_blk_` + base + unit) with its help text.
    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        var base = String(name.dropFirst("vduse_blk_".count))
        var unit = ""
        for u in ["_total", "_seconds", "_requests", "_errno", "_statistic"] where base.hasSuffix(u) {
            unit = String(u.dropFirst())
            base = String(base.dropLast(u.count))
            break
        }
        return MetricNameDescriptor(namespace: "vduse_blk", metricName: base, unitName: unit, helpText: help)
    }

    final class QueueMetrics {
        let counters: QueueCounters
        let requests: [Counter]
        let errors: [Counter?]
        let readBytes: Counter
        let writtenBytes: Counter
        let inFlight: Gauge
        let lastErrno: Gauge
        let serviceTime: ValueHistogram
        var last: QueueCountersSnapshot

        init(_ counters: QueueCounters, device: String, registry: PrometheusCollectorRegistry) {
            self.counters = counters
            let labels = [("device", device), ("queue", String(counters.queueIndex))]
            func counter(_ name: String, _ help: String, _ labels: [(String, String)]) -> Counter {
                registry.makeCounter(descriptor: MetricsCollector.descriptor(name, help), labels: labels)
            }
            func gauge(_ name: String, _ help: String) -> Gauge {
                registry.makeGauge(descriptor: MetricsCollector.descriptor(name, help), labels: labels)
            }
            requests = RequestKind.allCases.map {
                counter(Name.requests, "Requests completed, by type (unsupported, refused: answered at once, no backend work)",
                        labels + [("type", $0.label)])
            }
            errors = RequestKind.allCases.map { k in
                RequestKind.backendKinds.contains(k)
                    ? counter(Name.errors, "Requests the backing store failed (IOERR to the driver), by type",
                              labels + [("type", k.label)])
                    : nil
            }
            readBytes = counter(Name.readBytes, "Bytes read successfully", labels)
            writtenBytes = counter(Name.writtenBytes, "Bytes written successfully", labels)
            inFlight = gauge(Name.inFlight, "Requests handed to the backend and not completed yet")
            lastErrno = gauge(Name.lastErrno, "errno of the last backing-store failure (0: none yet, or a short transfer)")
            serviceTime = registry.makeValueHistogram(
                descriptor: MetricsCollector.descriptor(
                    Name.serviceTime, "Device-side service time: from the batch that took the request off the ring to the batch that completed it"),
                labels: labels, buckets: ServiceTimeReplay.boundsSeconds)
            last = .zero
        }

        func sync() {
            let now = counters.snapshot()
            for k in 0..<requests.count {
                grow(requests[k], now.requests[k], last.requests[k])
                if let e = errors[k] { grow(e, now.failures[k], last.failures[k]) }
            }
            grow(readBytes, now.bytesRead, last.bytesRead)
            grow(writtenBytes, now.bytesWritten, last.bytesWritten)
            inFlight.set(to: Double(now.inFlight))
            lastErrno.set(to: Double(now.lastFailureResult < 0 ? -now.lastFailureResult : 0))
            ServiceTimeReplay.replay(from: last, to: now) { value, count in
                for _ in 0..<count { serviceTime.record(value) }
            }
            last = now
        }

        func grow(_ c: Counter, _ new: UInt64, _ old: UInt64) {
            let d = ServiceTimeReplay.delta(new, old)
            if d > 0 { c.increment(by: Int64(clamping: d)) }
        }
    }

    final class DeviceMetrics {
        let source: DeviceMetricsSource
        let up: Gauge
        let queues: [QueueMetrics]
        var backend: [String: Gauge] = [:]

        init(_ source: DeviceMetricsSource, registry: PrometheusCollectorRegistry) {
            self.source = source
            up = registry.makeGauge(
                descriptor: MetricsCollector.descriptor(Name.up, "1 while the daemon serves the device and no queue needs a reset"),
                labels: [("device", source.name)])
            queues = source.queues.map { QueueMetrics($0, device: source.name, registry: registry) }
        }

        func sync(registry: PrometheusCollectorRegistry) {
            up.set(to: source.up ? 1 : 0)
            for q in queues { q.sync() }
            for (name, value) in source.backendStatistics() ?? [] {
                let key = MetricsCollector.labelValue(name)
                let g = backend[key] ?? {
                    let g = registry.makeGauge(
                        descriptor: MetricsCollector.descriptor(
                            Name.backend, "The backend's own counters and gauges (cache hits per tier, fetches, retries...)"),
                        labels: [("device", source.name), ("name", key)])
                    backend[key] = g
                    return g
                }()
                g.set(to: Double(value))
            }
        }
    }

    struct State: ~Copyable {
        let registry = PrometheusCollectorRegistry()
        var devices: [DeviceMetrics] = []
    }

    private let state = Mutex<State>(State())

    public init(devices: [DeviceMetricsSource] = []) {
        for d in devices { add(d) }
    }

    /// Starts exporting `device` (what its queues counted so far shows at the next sync).
    public func add(_ device: DeviceMetricsSource) {
        state.withLock { s in s.devices.append(DeviceMetrics(device, registry: s.registry)) }
    }

    /// Copies what the queues counted since the last sync into the registry.
    public func sync() {
        state.withLock { s in for d in s.devices { d.sync(registry: s.registry) } }
    }

    /// Syncs, then the text exposition of every metric (format 0.0.4).
    public func render() -> [UInt8] {
        state.withLock { s in
            for d in s.devices { d.sync(registry: s.registry) }
            var out: [UInt8] = []
            s.registry.emit(into: &out)
            return out
        }
    }

    /// A backend statistic's name as a label value: printable ASCII, at most 100 bytes.
    static func labelValue(_ name: String) -> String {
        String(String.UnicodeScalarView(name.unicodeScalars.prefix(100).map {
            $0.isASCII && $0.value >= 0x20 && $0 != "\"" && $0 != "\\" ? $0 : "_"
        }))
    }
}
