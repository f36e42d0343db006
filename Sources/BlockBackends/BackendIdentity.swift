import CSys
import Glibc
import SystemSupport

/// What data a backend serves, in terms that outlive its daemon: owns the
/// canonical form of a backend's sources (each file as its resolved path
/// plus device and inode, each URL as written) and its one-record text
/// encoding. `create` records it in the device's state directory; a daemon
/// adopting a live device compares the backend it was given with the
/// record, so a device cannot silently change images under a running guest.
public struct BackendIdentity: Equatable, Sendable, CustomStringConvertible {
    /// One thing the data comes from.
    public struct Source: Equatable, Sendable {
        /// "image", "overlay", "url", or "spec" (a backend that only knows its spec text).
        public var role: String
        /// A file's resolved path (as given when it does not exist), or a URL / spec text.
        public var location: String
        /// A file's device (st_dev; st_rdev for a block device) and inode
        /// (0 for a block device); both 0 for a URL or a missing file.
        public var device: UInt64
        public var inode: UInt64
        /// A file's birth time in nanoseconds (0: the file system keeps
        /// none), so a file that reused a deleted image's inode number is
        /// still another image.
        public var birth: UInt64
        /// False for a file that does not exist (never matches anything).
        public var exists: Bool

        public init(role: String, location: String, device: UInt64 = 0, inode: UInt64 = 0, birth: UInt64 = 0,
                    exists: Bool = true) {
            self.role = role
            self.location = location
            self.device = device
            self.inode = inode
            self.birth = birth
            self.exists = exists
        }

        /// Files match by device and inode (another path to the same file is
        /// the same image); everything else by its text.
        public func sameData(as other: Source) -> Bool {
            guard role == other.role, exists, other.exists else { return false }
            if isFile || other.isFile {
                return isFile && other.isFile && device == other.device && inode == other.inode
                    && (birth == 0 || other.birth == 0 || birth == other.birth)
            }
            return location == other.location
        }

        var isFile: Bool { role == "image" || role == "overlay" }
    }

    /// The spec kind (file, zstd, https, ...).
    public var kind: String
    public var sources: [Source]

    public init(kind: String, sources: [Source]) {
        self.kind = kind
        self.sources = sources
    }

    /// A spec that only knows itself: matches the same spec text.
    public init(spec: BackendSpec) {
        self.init(kind: spec.kind, sources: [Source(role: "spec", location: spec.text)])
    }

    /// True when both name the same data: same kind and, role by role, the same sources.
    public func sameData(as other: BackendIdentity) -> Bool {
        kind == other.kind && sources.count == other.sources.count
            && zip(sources, other.sources).allSatisfy { $0.sameData(as: $1) }
    }

    /// e.g. `file:/srv/a.img (device 0:44, inode 12)`, or
    /// `zstd:/srv/a.zst (...) overlay=/srv/a.ovl (...)`.
    public var description: String {
        var parts: [String] = []
        for (i, s) in sources.enumerated() {
            var text = i == 0 ? "\(kind):\(s.location)" : "\(s.role)=\(s.location)"
            if !s.exists {
                text += " (does not exist)"
            } else if s.isFile {
                text += s.inode == 0
                    ? " (block device \(major(s.device)):\(minor(s.device)))"
                    : " (device \(major(s.device)):\(minor(s.device)), inode \(s.inode))"
            }
            parts.append(text)
        }
        return parts.isEmpty ? "\(kind):" : parts.joined(separator: " ")
    }

    /// Linux's dev_t split (glibc's gnu_dev_major/minor).
    func major(_ d: UInt64) -> UInt64 { ((d >> 8) & 0xfff) | ((d >> 32) & ~0xfff) }
    func minor(_ d: UInt64) -> UInt64 { (d & 0xff) | ((d >> 12) & ~0xff) }

    /// The file at `path` as a source: its resolved path, device and inode
    /// (a block device by its device number). Only stats: never opens, so a
    /// FIFO or a missing file cannot block or be created.
    public static func file(role: String, path: String) -> Source {
        var st = stat()
        guard sysCallResult({ stat(path, &st) }) == 0 else {
            return Source(role: role, location: absolute(path), exists: false)
        }
        var location = absolute(path)
        if let resolved = realpath(path, nil) {
            location = String(cString: resolved)
            free(resolved)
        }
        if st.st_mode & S_IFMT == S_IFBLK {
            return Source(role: role, location: location, device: UInt64(st.st_rdev), inode: 0)
        }
        var sec: Int64 = 0
        var nsec: UInt32 = 0
        var birth: UInt64 = 0
        if sysCallResult(returnsNegatedErrno: true, { vb_statx_birth(path, &sec, &nsec) }) == 0, sec > 0 {
            birth = UInt64(sec) &* 1_000_000_000 &+ UInt64(nsec)
        }
        return Source(role: role, location: location, device: UInt64(st.st_dev), inode: UInt64(st.st_ino),
                      birth: birth)
    }

    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buf, buf.count) != nil else { return path }
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } + "/" + path
    }
}

// MARK: - the record's text form

extension BackendIdentity {
    static let header = "vduse-blk backend identity 1"
    /// Larger records are refused unread (a record is a few hundred bytes).
    public static let maxRecordBytes = 64 * 1024

    /// The record: a header line, `kind K`, then one `source ROLE DEVICE
    /// INODE BIRTH EXISTS LOCATION` line per source; text fields percent-encoded
    /// (every byte outside '!'...'~', and '%'), so paths with spaces,
    /// newlines or any bytes survive.
    public var record: String {
        var out = Self.header + "\n" + "kind \(Self.encode(kind))\n"
        for s in sources {
            out += "source \(Self.encode(s.role)) \(s.device) \(s.inode) \(s.birth) \(s.exists ? 1 : 0) "
                + "\(Self.encode(s.location))\n"
        }
        return out
    }

    /// Parses a record (untrusted: a state file anyone with root may have
    /// edited); throws `.invalidSpec` naming what is wrong.
    public static func parse(record text: String) throws(BackendError) -> BackendIdentity {
        guard text.utf8.count <= maxRecordBytes else { throw .invalidSpec("backend record is too large") }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 3, lines[0] == Substring(header), lines.last == "" else {
            throw .invalidSpec("not a backend record (bad header or truncated)")
        }
        let kindFields = lines[1].split(separator: " ", omittingEmptySubsequences: false)
        guard kindFields.count == 2, kindFields[0] == "kind", let kind = decode(kindFields[1]), !kind.isEmpty else {
            throw .invalidSpec("backend record: bad kind line")
        }
        var sources: [Source] = []
        for line in lines[2..<(lines.count - 1)] {
            let f = line.split(separator: " ", omittingEmptySubsequences: false)
            guard f.count == 7, f[0] == "source", let role = decode(f[1]), !role.isEmpty,
                  let device = UInt64(f[2]), let inode = UInt64(f[3]), let birth = UInt64(f[4]),
                  f[5] == "0" || f[5] == "1", let location = decode(f[6]) else {
                throw .invalidSpec("backend record: bad source line")
            }
            sources.append(Source(role: role, location: location, device: device, inode: inode, birth: birth,
                                  exists: f[5] == "1"))
        }
        guard !sources.isEmpty, sources.count <= 16 else { throw .invalidSpec("backend record: no or too many sources") }
        return BackendIdentity(kind: kind, sources: sources)
    }

    static func encode(_ s: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for b in s.utf8 {
            if b > 0x20 && b < 0x7F && b != UInt8(ascii: "%") {
                out.append(b)
            } else {
                out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 0xF)]]
            }
        }
        return out.isEmpty ? "%" : String(decoding: out, as: UTF8.self)
    }

    /// Inverse of `encode`; nil on a malformed escape or bytes that are not UTF-8.
    static func decode(_ s: Substring) -> String? {
        if s == "%" { return "" }
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            guard b > 0x20 && b < 0x7F else { return nil }
            guard b == UInt8(ascii: "%") else { out.append(b); continue }
            guard let h = it.popFirst().flatMap(hexValue), let l = it.popFirst().flatMap(hexValue) else { return nil }
            out.append(h << 4 | l)
        }
        return String(validating: out, as: UTF8.self)
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        default: return nil
        }
    }
}
