import Foundation
import Glibc

/// A fresh directory (`<parent>/vb-<label>-XXXXXX`), removed with everything
/// in it when the last reference goes away.
public final class TempDir {
    public let path: String

    public init(parent: String = NSTemporaryDirectory(), label: String = "test") throws {
        let parent = parent.hasSuffix("/") ? String(parent.dropLast()) : parent
        var template = Array((parent + "/vb-\(label)-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw NSError(domain: NSPOSIXErrorDomain, code: Int(errno))
        }
        path = String(cString: made)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// The path of `name` inside this directory.
    public func file(_ name: String) -> String { path + "/" + name }
}
