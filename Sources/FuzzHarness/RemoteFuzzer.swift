@_spi(Fuzzing) import RemoteImage
import ImageOverlay
import SystemSupport
import ZstdImage

/// Fuzz target "remote": the bytes a remote server (or the local, untrusted
/// disk-cache metadata file) controls. The first byte picks the mode (mod 4):
///
/// 0. an HTTP response head: 12 parameter bytes (see `checkParameters`), then
///    the head, fed to `HTTPResponseHead.consume(line:)` one LF-terminated
///    line at a time; then `ResponseCheck.judge` of that head;
/// 1. text for `ContentRange.parse`;
/// 2. a Content-Range built from three numbers (and a spelling byte);
/// 3. a disk-cache metadata file for `DiskChunkCache.decodeMeta`: flags,
///    identity, then the file (or, flag bit 1, present bits and hashes that
///    `encodeMeta` turns into a file, then patched).
///
/// Checks: no crash or trap; a parsed head has a status of 0 or 100-599 and
/// bounded validators, and its Content-Range is well formed; a parsed
/// ContentRange has first <= last, last < total when the total is known, a
/// length that fits in UInt64, and parses back from its own spelling;
/// `judge` says `.success` only for 200/206 with received == length, no
/// overflow or transport error, unchanged validators, and for 206 a
/// Content-Range of exactly the bytes asked for (and the object's size);
/// a decoded metadata file has hashes.count == chunkCount, one bitmap word
/// per 64 chunks and no bit past chunkCount, and re-encoding it decodes to
/// the same bits and hashes (byte for byte the same file when the validator
/// bytes were the identity's).
public enum RemoteFuzzer {
    public static func run(_ data: UnsafeRawBufferPointer) {
        var input = FuzzInput(data)
        switch input.u8() % 4 {
        case 0: responseHead(&input)
        case 1: contentRangeText(input.rest())
        case 2: contentRangeParts(&input)
        default: metadata(&input)
        }
    }

    // MARK: response heads and judging

    static func responseHead(_ input: inout FuzzInput) {
        let flags = input.u8()
        let first = UInt64(input.u32())
        let length = Int(input.u16()) + 1
        let extra = UInt64(input.u32())
        let delta = Int(input.u8()) - 128
        let text = input.rest()

        var head = HTTPResponseHead()
        var start = 0
        while start < text.count {
            var end = start
            while end < text.count && text[end] != 0x0A { end += 1 }
            if end < text.count { end += 1 }
            text[start..<end].withUnsafeBytes { head.consume(line: $0) }
            if QueueFuzzer.trace { print("line \(String(decoding: text[start..<end], as: UTF8.self).debugDescription) -> \(head)") }
            start = end
        }
        fuzzCheck(head.status == 0 || (100...599).contains(head.status), "status \(head.status)")
        fuzzCheck(!(head.contentRangeMalformed && head.contentRange != nil), "Content-Range both parsed and malformed")
        if let cr = head.contentRange { checkRange(cr, "head") }
        if let etag = head.etag { fuzzCheck(!etag.isEmpty && etag.utf8.count <= 512, "ETag of \(etag.utf8.count) bytes") }
        if let lm = head.lastModified { fuzzCheck(!lm.isEmpty && lm.utf8.count <= 128, "Last-Modified of \(lm.utf8.count) bytes") }

        // What was asked: from the parameters, or (bit 0) what the head's
        // Content-Range says, so the fuzzer reaches every verdict.
        var askFirst = first, askLength = length, objectSize = first + UInt64(length) + extra
        if flags & 1 != 0, let cr = head.contentRange, cr.length <= 1 << 24 {
            askFirst = cr.first
            askLength = Int(cr.length)
            objectSize = cr.total ?? (cr.last + 1)
        }
        let etag: String?, lastModified: String?
        switch flags >> 4 & 3 {
        case 1: etag = head.etag
        case 2: etag = "\"fuzz-etag\""
        default: etag = nil
        }
        switch flags >> 6 & 3 {
        case 1: lastModified = head.lastModified
        case 2: lastModified = "Thu, 01 Jan 1970 00:00:00 GMT"
        default: lastModified = nil
        }
        let check = ResponseCheck(first: askFirst, length: askLength, objectSize: objectSize, etag: etag,
                                  lastModified: lastModified)
        let received = flags & 2 != 0 ? askLength : max(0, askLength + delta)
        let overflow = flags & 4 != 0
        let transportError = flags & 8 != 0 ? "Timeout was reached" : nil
        let verdict = check.judge(transportError: transportError, head: head, received: received, overflow: overflow)
        if QueueFuzzer.trace { print("judge \(check) received \(received) -> \(verdict)") }
        guard case .success = verdict else { return }
        fuzzCheck(!overflow && transportError == nil, "success despite overflow or a transport error")
        fuzzCheck(received == askLength, "success with \(received) of \(askLength) bytes")
        switch head.status {
        case 206:
            guard let cr = head.contentRange else { return fuzzCheck(false, "206 success without Content-Range") }
            fuzzCheck(cr.first == askFirst && cr.last - cr.first + 1 == UInt64(askLength),
                      "206 success for bytes \(cr.first)-\(cr.last), asked \(askFirst)+\(askLength)")
            fuzzCheck(cr.total == nil || cr.total == objectSize, "206 success with total \(String(describing: cr.total))")
        case 200:
            fuzzCheck(askFirst == 0 && UInt64(askLength) == objectSize, "200 success for a partial range")
        default:
            fuzzCheck(false, "success with HTTP status \(head.status)")
        }
        if let etag = etag, let now = head.etag { fuzzCheck(etag == now, "success with a changed ETag") }
        if let lm = lastModified, let now = head.lastModified { fuzzCheck(lm == now, "success with a changed Last-Modified") }
    }

    // MARK: Content-Range

    static func checkRange(_ r: ContentRange, _ context: @autoclosure () -> String) {
        fuzzCheck(r.first <= r.last, "\(context()): range \(r.first)-\(r.last) backwards")
        if let total = r.total { fuzzCheck(r.last < total, "\(context()): range ends at \(r.last) of \(total)") }
        // `length` (last - first + 1) must not overflow: judge and the probe use it.
        fuzzCheck(r.last - r.first < UInt64.max, "\(context()): range \(r.first)-\(r.last) has no UInt64 length")
        let spelled = "bytes \(r.first)-\(r.last)/\(r.total.map { "\($0)" } ?? "*")"
        fuzzCheck(ContentRange.parse(spelled) == r, "\(context()): '\(spelled)' does not parse back")
    }

    static func contentRangeText(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        if let r = ContentRange.parse(text) { checkRange(r, "'\(text)'") }
    }

    static func contentRangeParts(_ input: inout FuzzInput) {
        let spelling = input.u8()
        // Any width, and often right at the top of UInt64 (where `length` would overflow).
        func number() -> UInt64 {
            let v = input.u64(), s = input.u8()
            return s & 0x80 != 0 ? UInt64.max - UInt64(s & 0x7F) : v >> UInt64(s % 64)
        }
        let first = number(), last = number(), total = number()
        let unknown = spelling & 1 != 0
        let text = "bytes \(first)-\(last)/\(unknown ? "*" : "\(total)")"
        let parsed = ContentRange.parse(text)
        let valid = first <= last && (unknown || last < total)
        if let parsed {
            checkRange(parsed, "'\(text)'")
            fuzzCheck(parsed == ContentRange(first: first, last: last, total: unknown ? nil : total), "'\(text)' parsed as \(parsed)")
        } else {
            // A well-formed range is refused only for a last byte of UInt64.max with an
            // unknown total (its length might not fit in UInt64; with a total it cannot occur).
            fuzzCheck(!valid || (unknown && last == UInt64.max), "'\(text)' refused")
        }
    }

    // MARK: disk-cache metadata

    /// Flags (bit 0: keep the file's checksum instead of recomputing it; bit 1:
    /// build the file with `encodeMeta`), the identity (object size, chunk
    /// size as a power of two, validator), then the file or what to encode.
    static func metadata(_ input: inout FuzzInput) {
        let flags = input.u8()
        let chunkSize = 512 << Int(input.u8() % 16)
        let objectSize = UInt64(input.u32()) % (UInt64(chunkSize) * 4096) + 1
        let validator = String(decoding: input.take(input.below(48)), as: UTF8.self)
        let identity = DiskChunkCache.Identity(objectSize: objectSize, chunkSize: chunkSize, validator: validator)
        let chunkCount = Int(objectSize / UInt64(chunkSize) + (objectSize % UInt64(chunkSize) == 0 ? 0 : 1))
        let words = (chunkCount + 63) / 64

        var bytes: [UInt8]
        if flags & 2 != 0 {
            var present = (0..<words).map { _ in input.u64() }
            if chunkCount & 63 != 0 && flags & 4 == 0 { present[words - 1] &= (1 << UInt64(chunkCount & 63)) - 1 }
            let hashes = (0..<chunkCount).map { _ in flags & 8 != 0 ? input.u64() : UInt64(0) }
            bytes = DiskChunkCache.encodeMeta(identity: identity, present: present, hashes: hashes)
            // Patches: (offset, byte) pairs.
            for _ in 0..<input.below(8) {
                let at = Int(input.u16()) % bytes.count
                bytes[at] = input.u8()
            }
        } else {
            bytes = input.rest()
        }
        if flags & 1 == 0, bytes.count >= 16 {
            let sum = bytes.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[0..<(bytes.count - 8)])) }
            for i in 0..<8 { bytes[bytes.count - 8 + i] = UInt8(truncatingIfNeeded: sum >> (8 * UInt64(i))) }
        }
        let result = DiskChunkCache.decodeMeta(bytes, identity: identity, chunkCount: chunkCount)
        if QueueFuzzer.trace { print("meta of \(bytes.count) bytes for \(identity), \(chunkCount) chunks -> \(result)") }
        guard case .success(let loaded) = result else { return }
        fuzzCheck(loaded.hashes.count == chunkCount, "\(loaded.hashes.count) hashes for \(chunkCount) chunks")
        fuzzCheck(loaded.present.count == words, "\(loaded.present.count) bitmap words for \(chunkCount) chunks")
        if chunkCount & 63 != 0 {
            fuzzCheck(loaded.present[words - 1] >> UInt64(chunkCount & 63) == 0, "bits past chunk \(chunkCount)")
        }
        let again = DiskChunkCache.encodeMeta(identity: identity, present: loaded.present, hashes: loaded.hashes)
        guard case .success(let back) = DiskChunkCache.decodeMeta(again, identity: identity, chunkCount: chunkCount) else {
            return fuzzCheck(false, "re-encoded metadata refused")
        }
        fuzzCheck(back.present == loaded.present && back.hashes == loaded.hashes, "metadata does not round-trip")
        // The format is canonical except for the validator's spelling (decoding repairs invalid UTF-8).
        let v = Array(validator.utf8)
        if bytes.count >= 32 + v.count, Array(bytes[32..<(32 + v.count)]) == v {
            fuzzCheck(again == bytes, "re-encoding a decoded metadata file changed its bytes")
        }
    }

    // MARK: access traces

    static func accessTrace(_ bytes: [UInt8]) {
        guard let trace = try? AccessTrace.parse(bytes) else { return }
        let count = Int((trace.objectSize + UInt64(trace.chunkSize) - 1) / UInt64(trace.chunkSize))
        fuzzCheck(trace.chunks.allSatisfy { $0 >= 0 && $0 < count }, "a chunk index past \(count)")
        fuzzCheck(Set(trace.chunks).count == trace.chunks.count, "a chunk listed twice")
        let again = try? AccessTrace.parse(Array(trace.encoded().utf8))
        fuzzCheck(again == trace || trace.validator.contains("\r"), "re-encoded trace parses differently")
    }
}
