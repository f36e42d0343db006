import CSys
import Glibc

/// Whether a block device (and its partitions) is in use: mounted, held by
/// another block device (dm, md), or opened exclusively. `destroy` asks before
/// touching anything, since unbinding a disk in use pulls it from under its users.
struct DiskUsage {
    var sysBlock = "/sys/block"
    var mountinfo = "/proc/self/mountinfo"
    var devDir = "/dev"

    /// Why `disk` (e.g. "vda") is in use, or nil when nothing holds it.
    /// `probeExclusive` also opens each node O_EXCL (only safe while the
    /// device is served: an open of a disk whose daemon died can hang).
    func reason(disk: String, probeExclusive: Bool = true) -> String? {
        let base = "\(sysBlock)/\(disk)"
        var nodes = [disk]
        for e in Self.entries(base) where e.hasPrefix(disk) && e != disk { nodes.append(e) }
        var numbers: [String: String] = [:]
        for n in nodes {
            let dir = n == disk ? base : "\(base)/\(n)"
            if let dev = Self.readLine("\(dir)/dev") { numbers[dev] = n }
            let holders = Self.entries("\(dir)/holders")
            if !holders.isEmpty { return "/dev/\(n) is held by \(holders.sorted().joined(separator: ", "))" }
        }
        if let text = Self.readFile(mountinfo) {
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ")
                guard f.count > 4, let n = numbers[String(f[2])] else { continue }
                return "/dev/\(n) is mounted at \(f[4])"
            }
        }
        for n in nodes where probeExclusive {
            let fd = open("\(devDir)/\(n)", O_RDONLY | O_EXCL | O_CLOEXEC | O_NONBLOCK)
            if fd >= 0 { close(fd); continue }
            if errno == EBUSY { return "/dev/\(n) is open exclusively by another program" }
        }
        return nil
    }

    static func entries(_ dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            // In place: a record can be shorter than struct dirent (no `pointee` copy).
            let name = String(cString: vb_dirent_name(e))
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func readFile(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func readLine(_ path: String) -> String? {
        guard let s = readFile(path) else { return nil }
        let line = s.split(separator: "\n").first.map(String.init) ?? ""
        return line.isEmpty ? nil : line
    }
}
