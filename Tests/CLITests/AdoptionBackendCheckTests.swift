import BlockBackends
import Foundation
import Glibc
import Logging
import StandardBackends
import XCTest

@testable import vduse_blk

/// Adoption checks the image (issue 14): `create` records what the device
/// serves; a later `create` adopting the device with another image is a
/// clear error naming both, before anything is opened or created; the
/// record is outside input (hostile bytes are refused, never a trap).
final class AdoptionBackendCheckTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        var template = Array("/tmp/vduse-adopt-XXXXXX".utf8CString)
        dir = try XCTUnwrap(template.withUnsafeMutableBufferPointer { b -> String? in
            mkdtemp(b.baseAddress!).map { String(cString: $0) }
        })
    }

    override func tearDown() {
        _ = try? FileManager.default.removeItem(atPath: dir)
    }

    func touch(_ name: String) -> String {
        let path = "\(dir)/\(name)"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(count: 4096)))
        return path
    }

    func identity(_ spec: String) throws -> BackendIdentity { try BackendCatalog.standard.identity(of: spec) }

    func verdict(recorded: String, current: String) throws -> BackendRecord.Verdict {
        BackendRecord.verdict(record: try identity(recorded).record, current: try identity(current),
                              device: "vd0", recordPath: "\(dir)/backend")
    }

    func testSameFileBySymlinkOrHardLinkIsTheSameImage() throws {
        let a = touch("a.img")
        XCTAssertEqual(symlink(a, "\(dir)/link.img"), 0)
        XCTAssertEqual(link(a, "\(dir)/hard.img"), 0)
        XCTAssertEqual(try verdict(recorded: "file:\(a)", current: "file:\(a)"), .same)
        XCTAssertEqual(try verdict(recorded: "file:\(a)", current: "file:\(dir)/link.img"), .same)
        XCTAssertEqual(try verdict(recorded: "file:\(a)", current: "file:\(dir)/hard.img"), .same)
        let relative = FileManager.default.currentDirectoryPath
        defer { _ = FileManager.default.changeCurrentDirectoryPath(relative) }
        _ = FileManager.default.changeCurrentDirectoryPath(dir)
        XCTAssertEqual(try verdict(recorded: "file:\(a)", current: "file:a.img"), .same)
    }

    func testAnotherImageIsAMismatchNamingBoth() throws {
        let a = touch("a.img"), b = touch("b.img")
        guard case .mismatch(let message) = try verdict(recorded: "file:\(a)", current: "file:\(b)") else {
            return XCTFail("a different file was accepted")
        }
        XCTAssertTrue(message.contains(a) && message.contains(b), message)
        XCTAssertTrue(message.contains("vd0"), message)
        // The same path, replaced by another file (another inode), is another image.
        let recorded = try identity("file:\(a)").record
        XCTAssertEqual(unlink(a), 0)
        _ = touch("a.img")
        guard case .mismatch = BackendRecord.verdict(record: recorded, current: try identity("file:\(a)"),
                                                     device: "vd0", recordPath: "r") else {
            return XCTFail("a replaced image was accepted")
        }
        // A missing image never matches (and stat-ing it created nothing).
        guard case .mismatch(let m) = try verdict(recorded: "file:\(a)", current: "file:\(dir)/none.img") else {
            return XCTFail("a missing image was accepted")
        }
        XCTAssertTrue(m.contains("does not exist"), m)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/none.img"))
        // Another kind of backend.
        guard case .mismatch = try verdict(recorded: "file:\(a)", current: "zstd:\(a)") else {
            return XCTFail("another kind was accepted")
        }
    }

    func testZstdAndRemoteCompareImagesAndOverlaysNotTuning() throws {
        let img = touch("d.zst"), o1 = touch("o1"), o2 = touch("o2")
        XCTAssertEqual(try verdict(recorded: "zstd:\(img),overlay=\(o1),cache=1M",
                                   current: "zstd:\(img),overlay=\(o1)"), .same)
        guard case .mismatch = try verdict(recorded: "zstd:\(img),overlay=\(o1)", current: "zstd:\(img),overlay=\(o2)")
        else { return XCTFail("another overlay was accepted") }
        guard case .mismatch = try verdict(recorded: "zstd:\(img),overlay=\(o1)", current: "zstd:\(img)")
        else { return XCTFail("dropping the overlay was accepted") }
        XCTAssertEqual(try verdict(recorded: "https://h.example/disk.img,overlay=\(o1),chunk=1M",
                                   current: "https://h.example/disk.img,overlay=\(o1),memory=8M"), .same)
        XCTAssertEqual(try verdict(recorded: "https://h.example/disk.img", current: "http:https://h.example/disk.img"),
                       .same)
        guard case .mismatch = try verdict(recorded: "https://h.example/a.img", current: "https://h.example/b.img")
        else { return XCTFail("another URL was accepted") }
        guard case .mismatch = try verdict(recorded: "https://h.example/a.img,overlay=\(o1)",
                                           current: "https://h.example/a.img,overlay=\(o2)")
        else { return XCTFail("another remote overlay was accepted") }
    }

    func testRecordRoundTripsHostilePathsThroughTheFile() throws {
        let name = "sp ace\nnew%line\u{E9}\u{1F600}\t.img"
        let path = touch(name)
        let id = try identity("file:\(path)")
        XCTAssertEqual(id.sources.first?.location, path)
        XCTAssertEqual(try BackendIdentity.parse(record: id.record), id)
        let record = "\(dir)/backend"
        try BackendRecord.write(id, path: record)
        XCTAssertEqual(try BackendRecord.read(path: record), id.record)
        XCTAssertEqual(BackendRecord.verdict(record: try BackendRecord.read(path: record), current: id,
                                             device: "vd0", recordPath: record), .same)
        XCTAssertNil(try BackendRecord.read(path: "\(dir)/absent"))
        XCTAssertEqual(BackendRecord.verdict(record: nil, current: id, device: "vd0", recordPath: record), .noRecord)
    }

    func testDamagedRecordsAreRefusedNeverATrap() throws {
        let good = try identity("file:\(touch("a.img"))")
        let text = good.record
        for bad in ["", "garbage", text.replacingOccurrences(of: "source", with: "sauce"),
                    String(text.dropLast()), text + "extra\n", text.replacingOccurrences(of: " 1 ", with: " 2 "),
                    "vduse-blk backend identity 1\nkind file\n", text.replacingOccurrences(of: "/", with: "%G/")] {
            XCTAssertThrowsError(try BackendIdentity.parse(record: bad), bad.debugDescription)
            guard case .unreadable(let m) = BackendRecord.verdict(record: bad, current: good, device: "vd0",
                                                                   recordPath: "/run/x/backend") else {
                return XCTFail("accepted \(bad.debugDescription)")
            }
            XCTAssertTrue(m.contains("/run/x/backend"), m)
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            var bytes = Array(text.utf8)
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            _ = try? BackendIdentity.parse(record: String(decoding: bytes, as: UTF8.self))
        }
        // Not a small regular file: refused without blocking (a FIFO) or reading it all.
        XCTAssertEqual(mkfifo("\(dir)/fifo", 0o600), 0)
        XCTAssertThrowsError(try BackendRecord.read(path: "\(dir)/fifo"))
        XCTAssertTrue(FileManager.default.createFile(atPath: "\(dir)/big",
                                                     contents: Data(count: BackendIdentity.maxRecordBytes + 1)))
        XCTAssertThrowsError(try BackendRecord.read(path: "\(dir)/big"))
    }

    /// The whole check as `create` runs it, before the backend is opened:
    /// a device whose state says a.img, adopted with b.img, is refused,
    /// and b.img (which `--size` would create) is not created.
    func testCreateRefusesToAdoptWithAnotherImageBeforeOpeningIt() throws {
        let a = touch("a.img")
        let node = touch("vduse-node")
        let saved = getenv("VDUSE_BLK_RUN_DIR").map { String(cString: $0) }
        setenv("VDUSE_BLK_RUN_DIR", dir, 1)
        defer { if let saved { setenv("VDUSE_BLK_RUN_DIR", saved, 1) } else { unsetenv("VDUSE_BLK_RUN_DIR") } }
        XCTAssertEqual(mkdir("\(dir)/vd0", 0o700), 0)
        _ = touch("vd0/inflight")
        try BackendRecord.write(try identity("file:\(a)"), path: "\(dir)/vd0/backend")
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let other = "\(dir)/b.img"
        let command = try XCTUnwrap(try VduseBlk.parseAsRoot(
            ["create", "vd0", "--backend", "file:\(other)", "--size", "1M"]) as? CreateCommand)
        XCTAssertThrowsError(try command.checkBackendOfExistingDevice(logger: logger, deviceNode: node)) { error in
            let message = (error as? CLIFailure)?.message ?? "\(error)"
            XCTAssertTrue(message.contains(a) && message.contains(other), message)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: other), "nothing was created")
        let same = try XCTUnwrap(try VduseBlk.parseAsRoot(
            ["create", "vd0", "--backend", "file:\(a)"]) as? CreateCommand)
        XCTAssertNoThrow(try same.checkBackendOfExistingDevice(logger: logger, deviceNode: node))
        // An older state directory without a record: accepted (with a warning).
        XCTAssertEqual(unlink("\(dir)/vd0/backend"), 0)
        XCTAssertNoThrow(try command.checkBackendOfExistingDevice(logger: logger, deviceNode: node))
        // No device: nothing to check.
        XCTAssertNoThrow(try command.checkBackendOfExistingDevice(logger: logger, deviceNode: "\(dir)/absent"))
    }
}
