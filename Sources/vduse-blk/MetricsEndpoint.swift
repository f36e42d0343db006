import BlockBackends
import Logging
import MetricsExporter
import Synchronization
import VDUSEBlk

/// Whether the daemon still serves its device (read by the metrics' up gauge).
final class ServedFlag: Sendable {
    private let value = Atomic<Bool>(true)
    func set(_ v: Bool) { value.store(v, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

extension CreateCommand {
    /// Binds `--metrics` (nil without the option); a failure is the command's one-line error.
    func bindMetricsExporter() throws -> MetricsHTTPServer? {
        guard let text = metrics else { return nil }
        guard let address = MetricsAddress(text) else { throw CLIFailure(message: "--metrics: bad address \(text)") }
        do {
            return try MetricsHTTPServer(address: address, collector: MetricsCollector())
        } catch {
            throw CLIFailure(message: error.message)
        }
    }

    /// Exports `device` through the bound exporter and starts its thread;
    /// failing to start is logged, not fatal: the device still serves.
    func startMetricsExporter(_ server: MetricsHTTPServer?, device: VDUSEBlockDevice, factory: any BlockBackendFactory,
                              served: ServedFlag, logger: Logger) {
        guard let server else { return }
        server.collector.add(DeviceMetricsSource(
            name: device.name, queues: device.queueCounters, served: { served.isSet },
            backendStatistics: { factory.statistics() }))
        do {
            try server.start()
            logger.info("metrics at http://\(server.address.family == .ipv6 ? "[\(server.address.host)]" : server.address.host):\(server.port)/metrics")
        } catch {
            logger.error("\(error.message)")
        }
    }
}
