import Glibc
import Logging
import SystemSupport

/// A swift-log handler for log collectors (`--log-format json`): owns the
/// rendering of each event as one JSON object on one line, written to a file
/// descriptor (stderr by default) with a single write.
///
/// Fields: `timestamp` (RFC 3339, UTC, milliseconds), `level`, `label`,
/// `pid` (a number), `message`, then every metadata key of the logger and the
/// call (the call's win) as a top-level field, sorted by key. A metadata key
/// that would shadow one of the fixed fields is written as `meta.KEY`.
/// Strings are escaped so that the output is plain ASCII: `"` and `\`,
/// every control character (U+0000-U+001F, U+007F) and every non-ASCII
/// scalar become escapes (`\uXXXX`, surrogate pairs above U+FFFF), so a
/// hostile device name, path or server reply cannot break or forge a line.
struct JSONLogHandler: LogHandler {
    static let reserved: Set<String> = ["timestamp", "level", "label", "pid", "message"]

    let label: String
    let fd: Int32
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    init(label: String, fd: Int32 = 2) {
        self.label = label
        self.fd = fd
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = self.metadata
        if let metadata = event.metadata { merged.merge(metadata) { _, call in call } }
        if let error = event.error, merged["error"] == nil { merged["error"] = .string("\(error)") }
        let text = Self.render(timestamp: Self.rfc3339Now(), level: event.level, label: label, pid: getpid(),
                               message: event.message.description, metadata: merged)
        Self.writeAll(fd: fd, text)
    }

    /// One event as one line of JSON (ending in "\n").
    static func render(timestamp: String, level: Logger.Level, label: String, pid: Int32, message: String,
                       metadata: Logger.Metadata) -> String {
        var out = "{\"timestamp\":"
        appendString(timestamp, to: &out)
        out += ",\"level\":"
        appendString(level.rawValue, to: &out)
        out += ",\"label\":"
        appendString(label, to: &out)
        out += ",\"pid\":\(pid),\"message\":"
        appendString(message, to: &out)
        for key in metadata.keys.sorted() {
            out += ","
            appendString(reserved.contains(key) ? "meta.\(key)" : key, to: &out)
            out += ":"
            appendValue(metadata[key]!, to: &out)
        }
        out += "}\n"
        return out
    }

    static func appendValue(_ value: Logger.Metadata.Value, to out: inout String) {
        switch value {
        case .string(let s): appendString(s, to: &out)
        case .stringConvertible(let c): appendString(c.description, to: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                appendValue(item, to: &out)
            }
            out += "]"
        case .dictionary(let dict):
            out += "{"
            for (i, key) in dict.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                appendString(key, to: &out)
                out += ":"
                appendValue(dict[key]!, to: &out)
            }
            out += "}"
        }
    }

    /// Appends `s` as a JSON string literal of ASCII characters only.
    static func appendString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar.value {
            case 0x22: out += "\\\""
            case 0x5C: out += "\\\\"
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x20..<0x7F: out.unicodeScalars.append(scalar)
            case 0..<0x10000: appendEscape(UInt16(scalar.value), to: &out)
            default:
                let v = scalar.value - 0x10000
                appendEscape(UInt16(0xD800 + (v >> 10)), to: &out)
                appendEscape(UInt16(0xDC00 + (v & 0x3FF)), to: &out)
            }
        }
        out += "\""
    }

    static func appendEscape(_ unit: UInt16, to out: inout String) {
        let hex: [Character] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"]
        out += "\\u"
        for shift in stride(from: 12, through: 0, by: -4) { out.append(hex[Int(unit >> UInt16(shift)) & 0xF]) }
    }

    /// The current time as RFC 3339 UTC with milliseconds, e.g. 2026-12-01T08:10:31.123Z.
    static func rfc3339Now() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return rfc3339(seconds: Int(ts.tv_sec), nanoseconds: Int(ts.tv_nsec))
    }

    static func rfc3339(seconds: Int, nanoseconds: Int) -> String {
        var t = time_t(seconds)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2))T"
            + "\(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(pad(Int32(nanoseconds / 1_000_000), 3))Z"
    }

    /// Writes the whole line (retrying short writes and EINTR); a failing
    /// stderr is not worth dying for, so errors are dropped.
    static func writeAll(fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { buf in
            var done = 0
            while done < buf.count {
                let n = sysCallResult { write(fd, buf.baseAddress! + done, buf.count - done) }
                if n <= 0 { return }
                done += n
            }
        }
    }
}
