@testable import BlockBackends
import Glibc
import TestSupport
import XCTest

/// One writer per image: the file backend's lock, O_EXCL on block devices is
/// covered in the guest suite (the host has no spare block device), and
/// refusing what is not an image without blocking.
final class ImageLockTests: XCTestCase {
    func testSecondWriterIsRefusedUntilTheFirstIsGone() throws {
        let dir = try TempDir()
        let path = dir.file("disk.img")
        var first: FileBackendFactory? = try FileBackendFactory(path: path, size: 1 << 20, engine: .sync)
        XCTAssertNotNil(first)
        XCTAssertThrowsError(try FileBackendFactory(path: path, engine: .sync)) { e in
            XCTAssertEqual((e as? BackendError)?.kind, .busy, "\(e)")
            XCTAssertTrue("\(e)".contains(path), "\(e)")
        }
        // A reader is refused too while someone writes.
        XCTAssertThrowsError(try FileBackendFactory(path: path, readOnly: true, engine: .sync)) { e in
            XCTAssertEqual((e as? BackendError)?.kind, .busy, "\(e)")
        }
        first = nil
        XCTAssertNoThrow(try FileBackendFactory(path: path, engine: .sync))
    }

    func testReadersShareButKeepWritersOut() throws {
        let dir = try TempDir()
        let path = dir.file("disk.img")
        try writeFile(path, [UInt8](repeating: 1, count: 4096))
        let a = try FileBackendFactory(path: path, readOnly: true, engine: .sync)
        let b = try FileBackendFactory(path: path, readOnly: true, engine: .sync)
        XCTAssertThrowsError(try FileBackendFactory(path: path, engine: .sync)) { e in
            XCTAssertEqual((e as? BackendError)?.kind, .busy, "\(e)")
        }
        // Queue handles of a locked image still open (they are other open file descriptions).
        XCTAssertNoThrow(try a.makeQueueBackend(queueIndex: 0, depth: 4))
        XCTAssertNoThrow(try b.makeQueueBackend(queueIndex: 0, depth: 4))
    }

    /// Another program's OFD lock on the image (how qemu-storage-daemon locks
    /// its images) keeps a writer out as well.
    func testForeignLockIsHonoured() throws {
        let dir = try TempDir()
        let path = dir.file("disk.img")
        try writeFile(path, [UInt8](repeating: 0, count: 4096))
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var l = flock()
        l.l_type = Int16(F_RDLCK)
        l.l_whence = Int16(SEEK_SET)
        l.l_start = 100
        l.l_len = 1
        XCTAssertEqual(fcntl(fd, 37 /* F_OFD_SETLK */, &l), 0)
        XCTAssertThrowsError(try FileBackendFactory(path: path, engine: .sync)) { e in
            XCTAssertEqual((e as? BackendError)?.kind, .busy, "\(e)")
        }
        XCTAssertNoThrow(try FileBackendFactory(path: path, readOnly: true, engine: .sync))
    }

    /// A FIFO (or anything but a file or block device) is refused at once,
    /// read-only or not, instead of blocking in open().
    func testNonImagesAreRefusedWithoutBlocking() throws {
        let dir = try TempDir()
        let fifo = dir.file("fifo")
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        for readOnly in [true, false] {
            XCTAssertThrowsError(try FileBackendFactory(path: fifo, readOnly: readOnly, engine: .sync)) { e in
                XCTAssertEqual((e as? BackendError)?.kind, .invalidSpec, "\(e)")
                XCTAssertTrue("\(e)".contains("a FIFO"), "\(e)")
            }
        }
        XCTAssertThrowsError(try FileBackendFactory(path: dir.path, readOnly: true, engine: .sync)) { e in
            XCTAssertTrue("\(e)".contains("a directory") || "\(e)".contains("Is a directory"), "\(e)")
        }
    }

    /// A missing directory is named as such, not as a read-only problem.
    func testMissingDirectoryIsNamed() throws {
        let dir = try TempDir()
        let path = dir.file("no/such/dir/disk.img")
        XCTAssertThrowsError(try FileBackendFactory(path: path, size: 1 << 20, engine: .sync)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.contains("directory \(dir.file("no/such/dir")) does not exist"), text)
            XCTAssertFalse(text.contains("read-only"), text)
        }
        XCTAssertThrowsError(try FileBackendFactory(path: path, size: 1 << 20, readOnly: true, engine: .sync)) { e in
            XCTAssertTrue("\(e)".contains("read-only"), "\(e)")
        }
    }
}
