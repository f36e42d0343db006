import ArgumentParser
import BlockBackends
import BlockEngine
import Logging
import VDUSEBlk

/// The `--limit-*` options of `create` and `set`: IOPS and bytes/s limits for
/// reads, writes and both. Values: a whole number (IOPS), a size such as
/// 50M (bytes/s, binary units), or 0 / none for unlimited. Owns the parsing
/// of a limit's text, shared with the control socket (`QoSWire`).
struct QoSOptions: ParsableArguments {
    @Option(name: .customLong("limit-iops"), help: ArgumentHelp("Requests per second, reads and writes together (0 or none: unlimited).", valueName: "n"))
    var iops: String?

    @Option(name: .customLong("limit-read-iops"), help: ArgumentHelp("Read requests per second (0 or none: unlimited).", valueName: "n"))
    var readIOPS: String?

    @Option(name: .customLong("limit-write-iops"), help: ArgumentHelp("Write requests per second (0 or none: unlimited).", valueName: "n"))
    var writeIOPS: String?

    @Option(name: .customLong("limit-bps"), help: ArgumentHelp("Bytes per second, reads and writes together, e.g. 50M (0 or none: unlimited).", valueName: "rate"))
    var bps: String?

    @Option(name: .customLong("limit-read-bps"), help: ArgumentHelp("Read bytes per second, e.g. 20M (0 or none: unlimited).", valueName: "rate"))
    var readBPS: String?

    @Option(name: .customLong("limit-write-bps"), help: ArgumentHelp("Write bytes per second, e.g. 20M (0 or none: unlimited).", valueName: "rate"))
    var writeBPS: String?

    /// The options given, by limit name (`QoSLimits.named`), as text.
    var given: [(name: String, text: String)] {
        [("iops", iops), ("read-iops", readIOPS), ("write-iops", writeIOPS),
         ("bps", bps), ("read-bps", readBPS), ("write-bps", writeBPS)].compactMap { n, t in t.map { (n, $0) } }
    }

    /// The limits given, parsed and checked, by limit name; a usage error names the option.
    func changes() throws -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for (name, text) in given {
            do throws(QoSError) { out[name] = try Self.parse(name, text) } catch {
                throw ValidationError(error.description)
            }
        }
        return out
    }

    func validate() throws { _ = try changes() }

    /// `base` with the given limits applied.
    func limits(over base: QoSLimits = .unlimited) throws -> QoSLimits {
        var l = base
        for (name, value) in try changes() { _ = l.set(name, value) }
        return l
    }

    /// One limit's value from text: none/unlimited/0, a whole number (IOPS),
    /// or a size with an optional K/M/G/T suffix (bytes/s); range-checked.
    static func parse(_ name: String, _ text: String) throws(QoSError) -> UInt64 {
        let t = String(text.drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
        let value: UInt64
        if t == "none" || t == "unlimited" {
            value = 0
        } else if QoSLimits.isByteLimit(name) {
            do throws(BackendError) { value = try ByteSize.parse(t) } catch {
                throw QoSError("--limit-\(name): '\(text.prefix(64))' is not a rate (use e.g. 20M, 1G, or none)")
            }
        } else {
            guard !t.isEmpty, t.utf8.count <= 20, t.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = UInt64(t) else {
                throw QoSError("--limit-\(name): '\(text.prefix(64))' is not a whole number of requests per second (or none)")
            }
            value = n
        }
        try QoSLimits.check(name, value)
        return value
    }

    /// "iops=500 bps=none ..." for people.
    static func describe(_ l: QoSLimits) -> String {
        l.named.map { "\($0.name)=\($0.value == 0 ? "none" : "\($0.value)")" }.joined(separator: " ")
    }
}

extension CreateCommand {
    /// Sets the `--limit-*` limits on `device` (before its queues start) and logs them.
    func applyLimits(to device: VDUSEBlockDevice, logger: Logger) throws(VDUSEError) {
        let limits: QoSLimits
        do { limits = try qos.limits() } catch { throw .attach("\(error)") }
        do throws(QoSError) { try device.qos.set(limits) } catch { throw .attach(error.description) }
        if !limits.isUnlimited { logger.info("QoS limits: \(QoSOptions.describe(limits))") }
    }
}
