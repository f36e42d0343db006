import BlockBackends
import Glibc
import Logging
import StandardBackends
import SystemSupport
import VDUSEDevice

/// Adoption checks the image (issue 14): owns the device's backend record
/// (`STATE/backend`, a `BackendIdentity`) — written when `create` makes a
/// device, compared when a later `create` adopts it — and the verdict.
/// A daemon adopting a live device with another image would swap the disk
/// under a mounted filesystem; that is refused before anything is opened.
enum BackendRecord {
    /// What the record says about the backend a new daemon was given.
    enum Verdict: Equatable {
        /// Same data (files by device and inode).
        case same
        /// No record: the device was made by a vduse-blk that did not write one.
        case noRecord
        /// Another image: the message names both.
        case mismatch(String)
        /// The record cannot be read or parsed.
        case unreadable(String)
    }

    /// Compares `current` with the record text (nil: no record).
    static func verdict(record: String?, current: BackendIdentity, device: String, recordPath: String) -> Verdict {
        guard let record else { return .noRecord }
        let recorded: BackendIdentity
        do throws(BackendError) { recorded = try BackendIdentity.parse(record: record) } catch {
            return .unreadable("the backend record \(recordPath) is damaged (\(error.context)); remove it "
                + "to adopt \(device) without checking its image")
        }
        if recorded.sameData(as: current) { return .same }
        return .mismatch("device \(device) serves \(recorded), not \(current): adopting it with another "
            + "image would change the disk under its users; give the same --backend as the daemon that "
            + "created it (or destroy the device first)")
    }

    /// The record at `path`; nil when there is none. Throws a message on a
    /// record that is not a small regular file or cannot be read.
    static func read(path: String) throws(CLIFailure) -> String? {
        let fd: Int32
        do {
            fd = try sysCall("open") { open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK) }
        } catch {
            if error.errno.rawValue == ENOENT { return nil }
            throw CLIFailure(message: "cannot read backend record \(path): \(error.message)")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG,
              st.st_size <= off_t(BackendIdentity.maxRecordBytes) else {
            throw CLIFailure(message: "backend record \(path) is not a small regular file; remove it to adopt "
                + "without checking the image")
        }
        var bytes = [UInt8](repeating: 0, count: BackendIdentity.maxRecordBytes + 1)
        var got = 0
        while got < bytes.count {
            let n = bytes.withUnsafeMutableBytes { b in sysCallResult { Glibc.read(fd, b.baseAddress! + got, b.count - got) } }
            if n < 0 { throw CLIFailure(message: "cannot read backend record \(path): \(String(cString: strerror(Int32(-n))))") }
            if n == 0 { break }
            got += n
        }
        // Invalid UTF-8 is repaired here, and then refused by the parser.
        return String(decoding: bytes[0..<got], as: UTF8.self)
    }

    /// Writes the record (a temporary file renamed over it, mode 0600).
    static func write(_ identity: BackendIdentity, path: String) throws(CLIFailure) {
        let tmp = path + ".tmp"
        let text = Array(identity.record.utf8)
        do throws(SyscallError) {
            let fd = try sysCall("open") { open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600) }
            defer { close(fd) }
            var done = 0
            while done < text.count {
                let n = text.withUnsafeBytes { b in sysCallResult { Glibc.write(fd, b.baseAddress! + done, b.count - done) } }
                if n < 0 { throw SyscallError(call: "write", errno: Int32(-n)) }
                done += n
            }
            _ = try sysCall("rename") { rename(tmp, path) }
        } catch {
            unlink(tmp)
            throw CLIFailure(message: "cannot write backend record \(path): \(error.message)")
        }
    }
}

extension CreateCommand {
    /// Before the backend is opened (so a mismatch creates, grows or
    /// recovers nothing): when device NAME exists and will be adopted, the
    /// backend given must be the one its record names.
    /// `deviceNode`: where the device would be (tests point it elsewhere).
    func checkBackendOfExistingDevice(logger: Logger, deviceNode: String? = nil) throws {
        let state = DeviceStateDirectory.path(for: name)
        // Without an in-flight log there is nothing to adopt (createOrAdopt says so).
        guard access(deviceNode ?? "/dev/vduse/\(name)", F_OK) == 0, access("\(state)/inflight", F_OK) == 0
        else { return }
        let recordPath = "\(state)/backend"
        let current: BackendIdentity
        do throws(BackendError) { current = try BackendCatalog.standard.identity(of: backend) } catch {
            throw CLIFailure(message: error.description)
        }
        switch BackendRecord.verdict(record: try BackendRecord.read(path: recordPath), current: current,
                                     device: name, recordPath: recordPath) {
        case .same: logger.debug("backend matches the record of \(name): \(current)")
        case .noRecord:
            let why = "no backend record for \(name) (\(recordPath); its state was written by an older "
                + "vduse-blk): cannot check that \(current) is the image its previous daemon served"
            logger.warning("\(why)")
        case .mismatch(let message), .unreadable(let message): throw CLIFailure(message: message)
        }
    }

    /// Records what data the device serves (after the backend opened, so a
    /// file it created has its inode).
    func recordBackend(in state: DeviceStateDirectory) throws(CLIFailure) {
        let identity: BackendIdentity
        do throws(BackendError) { identity = try BackendCatalog.standard.identity(of: backend) } catch {
            throw CLIFailure(message: error.description)
        }
        try BackendRecord.write(identity, path: state.backendRecordPath)
    }
}
