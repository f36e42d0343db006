import CSys
import Glibc

/// Questions about paths answered with one or two system calls (sysfs
/// reads in particular), returning nil or false where the path is missing.
public enum PathQuery {
    /// Whether `path` exists (any file type; symlinks followed).
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// Whether `path` is a file this process may execute.
    public static func isExecutable(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG && access(path, X_OK) == 0
    }

    /// The last component of where the symbolic link `path` points.
    public static func linkTargetName(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let target = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return target.split(separator: "/").last.map(String.init)
    }

    /// The names in directory `path` (without . and ..), sorted.
    public static func entries(_ path: String) -> [String]? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = String(cString: vb_dirent_name(entry))
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}
