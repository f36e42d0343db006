import BlockBackends
import Glibc
import VirtioBlk
import VirtioDriverSim
import XCTest
import ZstdImage

/// The compressed backend behind the real queue worker and the simulated driver.
final class ZstdBackendEngineTests: XCTestCase {
    func testCompressedImageWithOverlayThroughTheEngine() throws {
        var t = Array("/tmp/vduse-blk-zstd.XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&t))
        defer { _ = system("rm -rf '\(dir)'") }
        // A 2 MiB raw image: a pattern with some all-zero chunks.
        var raw = pattern(2 << 20, seed: 77)
        for i in (512 << 10)..<(768 << 10) { raw[i] = 0 }
        let rawPath = "\(dir)/raw.img", zst = "\(dir)/base.zst", ovl = "\(dir)/base.ovl"
        let fd = open(rawPath, O_CREAT | O_WRONLY, 0o644)
        XCTAssertEqual(write(fd, raw, raw.count), raw.count)
        close(fd)
        _ = try ImagePacker.pack(raw: rawPath, output: zst, options: PackOptions(chunkSize: 64 << 10, level: 3, threads: 2))

        // Read-only without an overlay: reads equal the raw image, writes fail.
        let ro = try ZstdBackendFactory.open(ZstdBackendSpec(image: zst, overlay: nil, cacheBytes: 1 << 20))
        XCTAssertTrue(ro.geometry.readOnly)
        let h = try EngineHarness(backend: ro, readOnly: true)
        let r = h.run { $0.read(sector: 1000, length: 64 << 10, segments: 4) }
        XCTAssertEqual(r.status, BlkStatus.ok)
        XCTAssertEqual(h.builders[0].data(r.request!), Array(raw[(1000 * 512)..<(1000 * 512 + (64 << 10))]))
        XCTAssertEqual(h.run { $0.write(sector: 0, bytes: pattern(4096, seed: 1)) }.status, BlkStatus.ioError)
        h.stop()

        // With an overlay: a write, a flush, a discard; everything reads back merged.
        let rw = try ZstdBackendFactory.open(ZstdBackendSpec(image: zst, overlay: ovl, cacheBytes: 1 << 20))
        XCTAssertFalse(rw.geometry.readOnly)
        let h2 = try EngineHarness(backend: rw, queues: 2)
        let data = pattern(12 << 10, seed: 5)
        XCTAssertEqual(h2.run(0) { $0.write(sector: 7, bytes: data, segments: 3) }.status, BlkStatus.ok)
        XCTAssertEqual(h2.run(1) { $0.bare(type: BlkRequestType.flush) }.status, BlkStatus.ok)
        XCTAssertEqual(h2.run(1) { $0.range(type: BlkRequestType.discard, sector: 2048, sectors: 16) }.status, BlkStatus.ok)
        var expected = raw
        expected.replaceSubrange((7 * 512)..<(7 * 512 + data.count), with: data)
        for i in (2048 * 512)..<(2064 * 512) { expected[i] = 0 }
        let back = h2.run(1) { $0.read(sector: 0, length: 2 << 20, segments: 8) }
        XCTAssertEqual(back.status, BlkStatus.ok)
        XCTAssertEqual(h2.builders[1].data(back.request!), expected)
        h2.stop()
    }
}
