import BlockBackends
import Glibc
import SystemSupport

/// Where a running device's control socket lives: `$VDUSE_BLK_RUN_DIR`
/// (default /run/vduse-blk)/NAME.sock. Protocol: docs/control-socket.md.
enum ControlSocketPath {
    static func path(for name: String) -> String { "\(StatsFile.directory)/\(name).sock" }
}

/// A failed control request: a stable code for scripts and a message for people.
struct ControlError: Error, Equatable {
    var code: String
    var message: String
}

/// What the control socket serves: one device. Called on the control
/// socket's thread only, one request at a time.
protocol ControlTarget: AnyObject {
    /// Counters (the `stats` reply's fields besides `ok`).
    func stats() -> [String: Any]
    /// Identity and configuration (the `info` reply's fields besides `ok`).
    func info() -> [String: Any]
    /// Resizes the device to `bytes` (shrinking only with `shrink`).
    func resize(bytes: UInt64, shrink: Bool) throws(ControlError) -> [String: Any]
    /// Starts the daemon's clean shutdown (as SIGTERM does) after this reply is sent.
    func stop() -> [String: Any]
    /// Changes the QoS limits named in `changes` (limit name -> value, 0 =
    /// unlimited; the others stay) at once; the reply holds the limits now.
    func setLimits(_ changes: [String: UInt64]) throws(ControlError) -> [String: Any]
}

extension ControlTarget {
    func setLimits(_ changes: [String: UInt64]) throws(ControlError) -> [String: Any] {
        throw ControlError(code: "unsupported", message: "this device has no QoS limits")
    }
}

/// The line protocol: one JSON object per request line, one per reply line.
/// Stateless; turns any line into exactly one reply and never throws.
enum ControlProtocol {
    static let commands = ["stats", "info", "resize", "set", "stop", "help"]

    /// The reply line (no newline) for one request line (no newline).
    static func reply(to line: [UInt8], target: ControlTarget) -> (reply: String, stopAfter: Bool) {
        do throws(ControlError) {
            let request = try decode(line)
            guard let command = request["cmd"] else {
                throw ControlError(code: "bad_request", message: "missing \"cmd\" (one of \(commands.joined(separator: ", ")))")
            }
            guard let cmd = command as? String else {
                throw ControlError(code: "bad_request", message: "\"cmd\" must be a string")
            }
            switch cmd {
            case "stats": return (encode(ok: true, target.stats()), false)
            case "info": return (encode(ok: true, target.info()), false)
            case "help": return (encode(ok: true, ["commands": commands]), false)
            case "stop": return (encode(ok: true, target.stop()), true)
            case "resize":
                let bytes = try sizeArgument(request["size"])
                let shrink: Bool
                switch request["shrink"] {
                case nil: shrink = false
                case let b as Bool: shrink = b
                default: throw ControlError(code: "bad_request", message: "\"shrink\" must be true or false")
                }
                return (encode(ok: true, try target.resize(bytes: bytes, shrink: shrink)), false)
            case "set":
                return (encode(ok: true, try target.setLimits(try QoSWire.changes(request["limits"]))), false)
            default:
                throw ControlError(code: "unknown_command",
                                   message: "unknown command \"\(cmd.prefix(64))\" (known: \(commands.joined(separator: ", ")))")
            }
        } catch {
            return (errorReply(error), false)
        }
    }

    static func decode(_ line: [UInt8]) throws(ControlError) -> [String: Any] {
        let object: Any
        do throws(JSONText.ParseError) {
            object = try JSONText.parse(line)
        } catch {
            throw ControlError(code: "bad_json", message: "the request is not valid JSON")
        }
        guard let dict = object as? [String: Any] else {
            throw ControlError(code: "bad_request", message: "the request must be a JSON object")
        }
        return dict
    }

    /// `size`: a whole number of bytes, or a string with a suffix ("10G", "512M").
    static func sizeArgument(_ value: Any?) throws(ControlError) -> UInt64 {
        guard let value else { throw ControlError(code: "bad_request", message: "resize needs \"size\"") }
        if let s = value as? String {
            do throws(BackendError) { return try ByteSize.parse(s) } catch {
                throw ControlError(code: "bad_request", message: "\"size\": \(error.description)")
            }
        }
        if let n = value as? UInt64, n > 0 { return n }
        throw ControlError(code: "bad_request", message: "\"size\" must be a positive whole number of bytes or a size string like \"10G\"")
    }

    static func errorReply(_ e: ControlError) -> String {
        encode(ok: false, ["error": e.code, "message": e.message])
    }

    static func encode(ok: Bool, _ fields: [String: Any]) -> String {
        var all = fields
        all["ok"] = ok
        return JSONText.encode(all) ?? #"{"error":"internal","message":"reply not encodable","ok":false}"#
    }
}

