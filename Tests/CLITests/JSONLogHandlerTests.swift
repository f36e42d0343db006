import Foundation
import Glibc
import Logging
import XCTest

@testable import vduse_blk

/// `--log-format json`: every line must parse as one JSON object whatever
/// the message, label or metadata hold (device names, paths and server
/// replies are outside input), and must say when, how bad, which process.
final class JSONLogHandlerTests: XCTestCase {
    /// Every control character, DEL, quotes, backslashes, and non-ASCII
    /// from two-byte to astral, line separators, a BOM and a lone combining mark.
    static let hostile: [String] = [
        String(decoding: (0..<0x20).map { UInt8($0) }, as: UTF8.self),
        "quote \" backslash \\ slash / del \u{7F} end",
        "new\nline\r\ncarriage\ttab\u{0B}vt\u{0C}ff\u{08}bs\u{00}nul",
        "caf\u{E9} \u{65E5}\u{672C} \u{1F600} \u{10FFFF} \u{2028}ls\u{2029}ps \u{FEFF}bom \u{301}",
        "\"}, \"level\": \"critical\", \"x\": {\"",  // an attempt to forge fields
        "",
    ]

    func parse(_ line: String, file: StaticString = #filePath, line l: UInt = #line) throws -> [String: Any] {
        XCTAssertTrue(line.hasSuffix("\n"), "ends in a newline", file: file, line: l)
        XCTAssertEqual(line.utf8.filter { $0 == 0x0A }.count, 1, "exactly one line: \(line)", file: file, line: l)
        XCTAssertTrue(line.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F || $0 == 0x0A }, "plain ASCII: \(line)",
                      file: file, line: l)
        let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
        return try XCTUnwrap(object as? [String: Any], file: file, line: l)
    }

    func testHostileStringsRoundTripThroughJSONSerialization() throws {
        for s in Self.hostile {
            let metadata: Logger.Metadata = [
                "device": .string(s), s.isEmpty ? "empty" : s: .string("key \(s)"),
                "list": .array([.string(s), .stringConvertible(42)]),
                "nested": .dictionary([s: .dictionary(["inner": .string(s)])]),
            ]
            let line = JSONLogHandler.render(timestamp: "2026-12-01T08:10:31.123Z", level: .warning, label: s,
                                             pid: 4242, message: s, metadata: metadata)
            let o = try parse(line)
            XCTAssertEqual(o["message"] as? String, s)
            XCTAssertEqual(o["label"] as? String, s)
            XCTAssertEqual(o["level"] as? String, "warning")
            XCTAssertEqual(o["pid"] as? Int, 4242)
            XCTAssertEqual(o["timestamp"] as? String, "2026-12-01T08:10:31.123Z")
            XCTAssertEqual(o["device"] as? String, s)
            XCTAssertEqual(o[s.isEmpty ? "empty" : s] as? String, "key \(s)")
            XCTAssertEqual(o["list"] as? [String], [s, "42"])
            let nested = try XCTUnwrap(o["nested"] as? [String: Any])
            XCTAssertEqual((nested[s] as? [String: Any])?["inner"] as? String, s)
            XCTAssertEqual(o.count, 9, "no field forged: \(o.keys.sorted())")
        }
    }

    func testMetadataCannotShadowTheFixedFields() throws {
        let line = JSONLogHandler.render(
            timestamp: "2026-12-01T00:00:00.000Z", level: .info, label: "vduse-blk", pid: 7, message: "real",
            metadata: ["level": "critical", "message": "forged", "pid": "1", "timestamp": "x", "label": "y"])
        let o = try parse(line)
        XCTAssertEqual(o["level"] as? String, "info")
        XCTAssertEqual(o["message"] as? String, "real")
        XCTAssertEqual(o["pid"] as? Int, 7)
        XCTAssertEqual(o["meta.level"] as? String, "critical")
        XCTAssertEqual(o["meta.message"] as? String, "forged")
        XCTAssertEqual(o["meta.pid"] as? String, "1")
    }

    func testTimestampsAreRFC3339UTCWithMilliseconds() {
        XCTAssertEqual(JSONLogHandler.rfc3339(seconds: 0, nanoseconds: 5_000_000), "1970-01-01T00:00:00.005Z")
        XCTAssertEqual(JSONLogHandler.rfc3339(seconds: 1_764_576_631, nanoseconds: 999_999_999),
                       "2025-12-01T08:10:31.999Z")
        XCTAssertEqual(JSONLogHandler.rfc3339(seconds: 951_825_600, nanoseconds: 0), "2000-02-29T12:00:00.000Z")
        let now = JSONLogHandler.rfc3339Now()
        let pattern = #"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"#
        XCTAssertNotNil(now.range(of: pattern, options: .regularExpression), now)
    }

    /// Through a real Logger: one object per event, with the logger's and
    /// the call's metadata (device, queue), at or above the level only.
    func testLoggerWritesOneObjectPerEventToItsFileDescriptor() throws {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]) }
        var logger = Logger(label: "vduse-blk") { label in
            var h = JSONLogHandler(label: label, fd: fds[1])
            h.logLevel = .info
            return h
        }
        logger[metadataKey: "device"] = "vd\n0"
        logger.debug("not written")
        logger.info("created \"vd0\"", metadata: ["queue": .stringConvertible(3)])
        logger.error("queue stopped")
        close(fds[1])
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fds[0], &buffer, buffer.count)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n").map { String($0) + "\n" }
        XCTAssertEqual(lines.count, 2, "the debug line is filtered out")
        let first = try parse(lines[0])
        XCTAssertEqual(first["message"] as? String, "created \"vd0\"")
        XCTAssertEqual(first["level"] as? String, "info")
        XCTAssertEqual(first["device"] as? String, "vd\n0")
        XCTAssertEqual(first["queue"] as? String, "3")
        XCTAssertEqual(first["pid"] as? Int, Int(getpid()))
        XCTAssertEqual(first["label"] as? String, "vduse-blk")
        let second = try parse(lines[1])
        XCTAssertEqual(second["level"] as? String, "error")
        XCTAssertNil(second["queue"], "call metadata does not stick to the logger")
    }

    func testLogFormatOptionParsesAndRejectsUnknownFormats() throws {
        let plain = try XCTUnwrap(try VduseBlk.parseAsRoot(["create", "d0", "--backend", "file:/tmp/x"]) as? CreateCommand)
        XCTAssertEqual(plain.logFormat, .text)
        let json = try XCTUnwrap(try VduseBlk.parseAsRoot(
            ["create", "d0", "--backend", "file:/tmp/x", "--log-format", "json"]) as? CreateCommand)
        XCTAssertEqual(json.logFormat, .json)
        XCTAssertThrowsError(try VduseBlk.parseAsRoot(
            ["create", "d0", "--backend", "file:/tmp/x", "--log-format", "xml"])) { error in
            XCTAssertEqual(VduseBlk.exitCode(for: error), .validationFailure)
        }
    }
}
