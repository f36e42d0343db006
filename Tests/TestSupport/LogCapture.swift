import Logging
import SystemSupport

/// A log handler that keeps every message and its level, for tests that
/// assert what the daemon logs: `Logger(label: "x") { _ in capture }`.
public final class LogCapture: LogHandler, @unchecked Sendable {
    private let stored = Guarded<[(Logger.Level, String)]>([])
    public var logLevel: Logger.Level = .trace
    public var metadata: Logger.Metadata = [:]

    public init() {}

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public var lines: [String] { stored.withLock { $0.map(\.1) } }
    public var levels: [Logger.Level] { stored.withLock { $0.map(\.0) } }

    public func log(event: LogEvent) {
        stored.withLock { $0.append((event.level, event.message.description)) }
    }
}
