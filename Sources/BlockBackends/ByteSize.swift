import SystemSupport

/// Parses human sizes from the command line ("512", "4K", "256M", "1.5G" is
/// refused, "2T", "64KiB"): hostile input, so every overflow is an error.
public enum ByteSize {
    public static func parse(_ text: String) throws(BackendError) -> UInt64 {
        var s = Substring(text.trimmingCharacters(in: " \t"))
        guard !s.isEmpty else { throw .badSize("empty size") }
        var unit: UInt64 = 1
        let suffixes: [(String, UInt64)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
            ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40),
            ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40),
            ("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40), ("B", 1), ("b", 1),
        ]
        for (suffix, value) in suffixes where s.hasSuffix(suffix) {
            unit = value
            s = s.dropLast(suffix.count)
            break
        }
        guard !s.isEmpty, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = UInt64(s) else {
            throw .badSize("'\(text)' is not a size (use e.g. 512, 64K, 256M, 2G)")
        }
        let (v, overflow) = n.multipliedReportingOverflow(by: unit)
        guard !overflow, v <= UInt64(Int64.max) else { throw .badSize("'\(text)' is too large") }
        return v
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var sub = Substring(self)
        while let f = sub.first, chars.contains(f) { sub = sub.dropFirst() }
        while let l = sub.last, chars.contains(l) { sub = sub.dropLast() }
        return String(sub)
    }
}
