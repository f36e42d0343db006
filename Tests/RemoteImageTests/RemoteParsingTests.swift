import ImageOverlay
import SystemSupport
import BlockBackends
@_spi(Fuzzing) @testable import RemoteImage
import XCTest

/// Parsers and validators of untrusted input in the remote backend: response
/// heads, Content-Range, the per-attempt verdict, backend options, S3 endpoint
/// resolution, and the disk cache's metadata file.
final class RemoteParsingTests: XCTestCase {
    func head(_ lines: [String]) -> HTTPResponseHead {
        var h = HTTPResponseHead()
        for l in lines {
            let bytes = Array((l + "\r\n").utf8)
            bytes.withUnsafeBytes { h.consume(line: $0) }
        }
        return h
    }

    func testResponseHeadKeepsOnlyWellFormedFields() {
        let h = head(["HTTP/1.1 206 Partial Content", "Content-Length: 1024", "content-range:  bytes 0-1023/4096 ",
                      "ETag: \"abc\"", "Last-Modified: Sun, 22 Nov 2026 06:00:00 GMT"])
        XCTAssertEqual(h.status, 206)
        XCTAssertEqual(h.contentLength, 1024)
        XCTAssertEqual(h.contentRange, ContentRange(first: 0, last: 1023, total: 4096))
        XCTAssertEqual(h.etag, "\"abc\"")
        // A second status line (after 100-continue or a redirect) starts over.
        let again = head(["HTTP/1.1 100 Continue", "ETag: x", "HTTP/1.1 503 Busy"])
        XCTAssertEqual(again.status, 503)
        XCTAssertNil(again.etag)
        XCTAssertEqual(head(["HTTP/1.1 2O6 x"]).status, 0)
        XCTAssertEqual(head(["HTTP/1.1 99999 x"]).status, 0)
        XCTAssertNil(head(["HTTP/1.1 206 x", "Content-Length: 12a"]).contentLength)
        XCTAssertNil(head(["HTTP/1.1 206 x", "Content-Length: 99999999999999999999999"]).contentLength)
    }

    func testContentRangeRejectsMalformedAndInconsistentRanges() {
        XCTAssertEqual(ContentRange.parse("bytes 5-9/*"), ContentRange(first: 5, last: 9, total: nil))
        for bad in ["bytes 9-5/100", "bytes 0-100/100", "bytes -1-5/10", "bytes 0-5", "items 0-5/10", "bytes 0-5/", "bytes a-5/10",
                    "bytes 0-18446744073709551616/1", "bytes  0-5/10", "bytes 0-5/10x"] {
            XCTAssertNil(ContentRange.parse(bad), bad)
        }
        let h = head(["HTTP/1.1 206 x", "Content-Range: bytes nonsense"])
        XCTAssertTrue(h.contentRangeMalformed)
    }

    func testJudgeAcceptsOnlyTheExactRangeAsked() {
        let check = ResponseCheck(first: 4096, length: 4096, objectSize: 1 << 20, etag: "\"e\"", lastModified: nil)
        func judge(_ lines: [String], received: Int = 4096, overflow: Bool = false, error: String? = nil) -> AttemptOutcome {
            check.judge(transportError: error, head: head(lines), received: received, overflow: overflow)
        }
        XCTAssertEqual(judge(["HTTP/1.1 206 x", "Content-Range: bytes 4096-8191/1048576", "ETag: \"e\""]), .success)
        if case .retry = judge(["HTTP/1.1 206 x", "Content-Range: bytes 4608-8703/1048576"]) {} else { XCTFail("shifted range") }
        if case .retry = judge(["HTTP/1.1 206 x", "Content-Range: bytes 4096-8191/1048576"], received: 100) {} else { XCTFail("short") }
        if case .retry = judge(["HTTP/1.1 206 x", "Content-Range: bytes 4096-8191/1048576"], overflow: true) {} else { XCTFail("long") }
        if case .retry = judge(["HTTP/1.1 206 x"]) {} else { XCTFail("no Content-Range") }
        if case .retry = judge(["HTTP/1.1 503 x"]) {} else { XCTFail("503") }
        if case .retry = judge([], error: "Timeout was reached") {} else { XCTFail("timeout") }
        if case .fail = judge(["HTTP/1.1 200 OK"]) {} else { XCTFail("200 for a partial range") }
        if case .fail = judge(["HTTP/1.1 404 x"]) {} else { XCTFail("404") }
        if case .changed = judge(["HTTP/1.1 412 x"]) {} else { XCTFail("412") }
        if case .changed = judge(["HTTP/1.1 206 x", "Content-Range: bytes 4096-8191/2097152"]) {} else { XCTFail("size") }
        if case .changed = judge(["HTTP/1.1 206 x", "Content-Range: bytes 4096-8191/1048576", "ETag: \"f\""]) {} else { XCTFail("etag") }
        let whole = ResponseCheck(first: 0, length: 4096, objectSize: 4096, etag: nil, lastModified: nil)
        XCTAssertEqual(whole.judge(transportError: nil, head: head(["HTTP/1.1 200 OK"]), received: 4096, overflow: false), .success)
    }

    func testOptionsAreValidated() throws {
        let o = try RemoteOptions.parse(url: "http://h/x", options: ["chunk=4M", "memory=1G", "cache-dir=none", "connections=8",
                                                                   "prefetch=10M", "timeout=2.5", "format=zstd"])
        XCTAssertEqual(o.chunkSize, 4 << 20)
        XCTAssertEqual(o.memoryBytes, 1 << 30)
        XCTAssertNil(o.cacheDirectory)
        XCTAssertEqual(o.connections, 8)
        XCTAssertEqual(o.prefetchBytesPerSecond, 10 << 20)
        XCTAssertEqual(o.requestTimeoutSeconds, 2.5)
        XCTAssertEqual(o.format, .zstd)
        XCTAssertNil(o.decompressedCacheBytes, "sized from the image and the memory by default")
        XCTAssertEqual(try RemoteOptions.parse(url: "http://h/x", options: ["decompressed-cache=512M"]).decompressedCacheBytes,
                       512 << 20)
        XCTAssertEqual(try RemoteOptions.parse(url: "http://h/x", options: ["decompressed-cache=0"]).decompressedCacheBytes, 0)
        for bad in [["decompressed-cache=lots"], ["decompressed-cache=-1"], ["decompressed-cache=2P"], ["chunk=3M"], ["chunk=16K"], ["connections=0"], ["timeout=nan"], ["timeout=-1"], ["format=qcow2"],
                    ["bogus=1"], ["chunk=1M", "chunk=2M"], ["noequals"], ["style=sideways"]] {
            XCTAssertThrowsError(try RemoteOptions.parse(url: "http://h/x", options: bad), "\(bad)")
        }
        func parse(_ text: String) throws -> RemoteBackendSpec {
            let spec = try BackendSpec.parse(text)
            return try RemoteBackendSpec.parse(kind: spec.kind, spec.arguments)
        }
        XCTAssertEqual(try parse("http://h:8080/a/b.img,chunk=1M"), RemoteBackendSpec(url: "http://h:8080/a/b.img", options: ["chunk=1M"]))
        XCTAssertEqual(try parse("http:https://h/x"), RemoteBackendSpec(url: "https://h/x", options: []))
        XCTAssertEqual(try parse("s3://bucket/key.img"), RemoteBackendSpec(url: "s3://bucket/key.img", options: []))
        XCTAssertThrowsError(try parse("s3:bucket/key"))
        XCTAssertThrowsError(try parse("http://h/x,flag"))
        XCTAssertEqual(RemoteBackendProvider().kinds, ["http", "https", "s3"])
    }

    func testS3EndpointsVirtualHostAndPathStyle() throws {
        let env = ["AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "eu-west-1"]
        let aws = try RemoteEndpoint.resolve(RemoteOptions(url: "s3://my-bucket/images/disk 1.img"), environment: env)
        XCTAssertEqual(aws.url, "https://my-bucket.s3.eu-west-1.amazonaws.com/images/disk%201.img")
        XCTAssertNotNil(aws.signer)
        let lines = aws.headers(range: (0, 1023), ifMatch: nil, now: 1_440_938_160)
        XCTAssertTrue(lines.contains("range: bytes=0-1023"))
        XCTAssertTrue(lines.contains { $0.hasPrefix("Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/s3/aws4_request") ||
                                       $0.hasPrefix("authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/s3/aws4_request") }, "\(lines)")
        var minio = env
        minio["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9000"
        let path = try RemoteEndpoint.resolve(RemoteOptions(url: "s3://my-bucket/disk.img"), environment: minio)
        XCTAssertEqual(path.url, "http://127.0.0.1:9000/my-bucket/disk.img")
        var virtual = RemoteOptions(url: "s3://my-bucket/disk.img")
        virtual.s3PathStyle = false
        XCTAssertEqual(try RemoteEndpoint.resolve(virtual, environment: minio).url, "http://my-bucket.127.0.0.1:9000/disk.img")
        let anonymous = try RemoteEndpoint.resolve(RemoteOptions(url: "s3://my-bucket/disk.img"), environment: [:])
        XCTAssertNil(anonymous.signer)
        for bad in ["s3://B/key", "s3://bucket", "s3://bucket/", "http://user@h/x", "ftp://h/x", "http://h/x y"] {
            XCTAssertThrowsError(try RemoteEndpoint.resolve(RemoteOptions(url: bad), environment: env), bad)
        }
    }

    func testDiskCacheMetadataRoundTripsAndRejectsDamage() {
        let id = DiskChunkCache.Identity(objectSize: 10 << 20, chunkSize: 1 << 20, validator: "10485760;\"e\";")
        var present = [UInt64](repeating: 0, count: 1)
        present[0] = 0b1011
        let hashes = (0..<10).map { UInt64($0) * 977 }
        let bytes = DiskChunkCache.encodeMeta(identity: id, present: present, hashes: hashes)
        guard case .success(let loaded) = DiskChunkCache.decodeMeta(bytes, identity: id, chunkCount: 10) else {
            return XCTFail("valid metadata rejected")
        }
        XCTAssertEqual(loaded.present, present)
        XCTAssertEqual(loaded.hashes, hashes)
        var flipped = bytes
        flipped[40] ^= 1
        if case .success = DiskChunkCache.decodeMeta(flipped, identity: id, chunkCount: 10) { XCTFail("damage accepted") }
        var other = id
        other.validator = "10485760;\"f\";"
        if case .success = DiskChunkCache.decodeMeta(bytes, identity: other, chunkCount: 10) { XCTFail("changed object accepted") }
        present[0] |= 1 << 12  // past the 10 chunks
        let past = DiskChunkCache.encodeMeta(identity: id, present: present, hashes: hashes)
        if case .success = DiskChunkCache.decodeMeta(past, identity: id, chunkCount: 10) { XCTFail("bits past the end accepted") }
        if case .success = DiskChunkCache.decodeMeta(Array(bytes.prefix(30)), identity: id, chunkCount: 10) { XCTFail("truncated accepted") }
    }

    func testBackoffGrowsWithJitterAndIsCapped() {
        var p = FetchPolicy(RemoteOptions(url: "http://h/x"))
        p.backoffBase = 0.1
        p.backoffCap = 1
        for attempt in 2...12 {
            let d = p.backoff(beforeAttempt: attempt)
            let exp = min(1, 0.1 * Double(1 << (attempt - 2)))
            XCTAssertGreaterThanOrEqual(d, exp / 2)
            XCTAssertLessThanOrEqual(d, exp)
        }
    }
}
