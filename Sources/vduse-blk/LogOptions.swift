import ArgumentParser
import Logging

/// How a long-running command logs: owns `--log-level` and `--log-format`
/// and the one `LoggingSystem.bootstrap` call of the process.
///
/// Text (the default) is swift-log's stream handler on stderr: timestamp,
/// level, label, the metadata as `key=value` (device, queue, ...), message.
/// JSON is `JSONLogHandler`: one object per line for log collectors.
enum LogFormat: String, CaseIterable, ExpressibleByArgument {
    case text, json
}

extension LogFormat {
    /// Installs the process-wide handler at `level` (once per process).
    func bootstrap(level: Logger.Level) {
        switch self {
        case .text:
            LoggingSystem.bootstrap { label in
                var h = StreamLogHandler.standardError(label: label)
                h.logLevel = level
                return h
            }
        case .json:
            LoggingSystem.bootstrap { label in
                var h = JSONLogHandler(label: label)
                h.logLevel = level
                return h
            }
        }
    }
}

extension Logger {
    /// This logger with `device=NAME` attached to every line it writes.
    func forDevice(_ name: String) -> Logger {
        var l = self
        l[metadataKey: "device"] = .string(name)
        return l
    }
}
