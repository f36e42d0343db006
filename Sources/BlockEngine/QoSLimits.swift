/// A device's QoS limits: operations and bytes per second, for reads, writes
/// and both together (`total`). 0 means unlimited. Reads and writes count
/// against their own limit and the total one; flush, discard, write-zeroes
/// and GET_ID are not limited (they move no data over the bus). A plain value:
/// `QoSLimiter` applies it.
public struct QoSLimits: Equatable, Sendable {
    /// Requests per second, reads and writes together.
    public var iops: UInt64
    public var readIOPS: UInt64
    public var writeIOPS: UInt64
    /// Bytes per second, reads and writes together.
    public var bps: UInt64
    public var readBPS: UInt64
    public var writeBPS: UInt64

    /// The largest IOPS limit accepted (10 million per second).
    public static let maxIOPS: UInt64 = 10_000_000
    /// The smallest bytes/s limit accepted (4 KiB/s): below it one request would stall the queue for minutes.
    public static let minBPS: UInt64 = 4096
    /// The largest bytes/s limit accepted (1 PiB/s).
    public static let maxBPS: UInt64 = 1 << 50

    /// No limit at all.
    public static let unlimited = QoSLimits()

    public init(iops: UInt64 = 0, readIOPS: UInt64 = 0, writeIOPS: UInt64 = 0,
                bps: UInt64 = 0, readBPS: UInt64 = 0, writeBPS: UInt64 = 0) {
        self.iops = iops
        self.readIOPS = readIOPS
        self.writeIOPS = writeIOPS
        self.bps = bps
        self.readBPS = readBPS
        self.writeBPS = writeBPS
    }

    /// True when no limit is set.
    public var isUnlimited: Bool { self == .unlimited }

    /// The six limits with their option names (without `--limit-`), in a fixed order.
    public var named: [(name: String, value: UInt64)] {
        [("iops", iops), ("read-iops", readIOPS), ("write-iops", writeIOPS),
         ("bps", bps), ("read-bps", readBPS), ("write-bps", writeBPS)]
    }

    /// Sets the limit called `name` (as in `named`); false for an unknown name.
    public mutating func set(_ name: String, _ value: UInt64) -> Bool {
        switch name {
        case "iops": iops = value
        case "read-iops": readIOPS = value
        case "write-iops": writeIOPS = value
        case "bps": bps = value
        case "read-bps": readBPS = value
        case "write-bps": writeBPS = value
        default: return false
        }
        return true
    }

    /// True for the names of the bytes/s limits.
    public static func isByteLimit(_ name: String) -> Bool { name.hasSuffix("bps") }

    /// Checks one limit's value: 0 (unlimited), or 1...`maxIOPS` for an IOPS
    /// limit, `minBPS`...`maxBPS` for a bytes/s one. The message names the limit.
    public static func check(_ name: String, _ value: UInt64) throws(QoSError) {
        if value == 0 { return }
        if isByteLimit(name) {
            guard value >= minBPS, value <= maxBPS else {
                throw QoSError("--limit-\(name) must be 0 or none (unlimited) or from 4K to 1P bytes/s, not \(value)")
            }
        } else {
            guard value <= maxIOPS else {
                throw QoSError("--limit-\(name) must be 0 or none (unlimited) or at most \(maxIOPS) per second, not \(value)")
            }
        }
    }

    /// Checks every limit (see `check`).
    public func validate() throws(QoSError) {
        for (name, value) in named { try Self.check(name, value) }
    }
}

/// A QoS limit that cannot be set: the message names the option.
public struct QoSError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
