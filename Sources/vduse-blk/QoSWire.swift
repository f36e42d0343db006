import BlockEngine

/// QoS limits on the control socket: the `limits` object of `set`,
/// `stats` and `info` (keys `iops`, `read_iops`, `write_iops`, `bps`,
/// `read_bps`, `write_bps`; 0 = unlimited). Owns the decoding of a hostile
/// `set` request into checked changes: anything else is an error reply.
enum QoSWire {
    /// JSON key and limit name (`QoSLimits.named`), in order.
    static let keys: [(json: String, name: String)] = [
        ("iops", "iops"), ("read_iops", "read-iops"), ("write_iops", "write-iops"),
        ("bps", "bps"), ("read_bps", "read-bps"), ("write_bps", "write-bps"),
    ]

    /// The limits as a reply object.
    static func object(_ limits: QoSLimits) -> [String: Any] {
        var out: [String: Any] = [:]
        for ((json, _), (_, value)) in zip(keys, limits.named) { out[json] = value }
        return out
    }

    /// The changes a `set` request asks for, by limit name: `limits` must be
    /// a non-empty object of known keys, each a whole number >= 0 or a string
    /// as on the command line ("20M", "none"); values are range-checked.
    static func changes(_ value: Any?) throws(ControlError) -> [String: UInt64] {
        guard let value else {
            throw ControlError(code: "bad_request", message: "set needs \"limits\": an object such as {\"iops\": 500}")
        }
        guard let object = value as? [String: Any] else {
            throw ControlError(code: "bad_request", message: "\"limits\" must be an object such as {\"iops\": 500}")
        }
        guard !object.isEmpty else {
            throw ControlError(code: "bad_request", message: "\"limits\" is empty: name at least one of \(keys.map(\.json).joined(separator: ", "))")
        }
        var out: [String: UInt64] = [:]
        for (key, raw) in object {
            guard let name = keys.first(where: { $0.json == key })?.name else {
                throw ControlError(code: "bad_request",
                                   message: "unknown limit \"\(key.prefix(64))\" (known: \(keys.map(\.json).joined(separator: ", ")))")
            }
            do throws(QoSError) {
                if let text = raw as? String {
                    out[name] = try QoSOptions.parse(name, text)
                } else if let n = raw as? UInt64 {
                    try QoSLimits.check(name, n)
                    out[name] = n
                } else {
                    throw QoSError("\"\(key)\" must be a whole number >= 0 or a string such as \"20M\" or \"none\"")
                }
            } catch {
                throw ControlError(code: "bad_limit", message: "\(key): \(error.description)")
            }
        }
        return out
    }

    /// Applies `changes` (limit name -> value) over the limiter's current
    /// limits, all at once; returns the limits now.
    static func apply(_ changes: [String: UInt64], to limiter: QoSLimiter) throws(ControlError) -> QoSLimits {
        var limits = limiter.limits
        for (name, value) in changes { _ = limits.set(name, value) }
        do throws(QoSError) { try limiter.set(limits) } catch {
            throw ControlError(code: "bad_limit", message: error.description)
        }
        return limits
    }
}
