import ImageOverlay
import Glibc

/// A recorded chunk access order of one remote object (`record-trace=`),
/// replayed at a later cold start (`prefetch-trace=`). Owns the object's
/// identity (size, chunk size, validators: a trace of another object or
/// another chunk size is refused) and the chunk indexes in first-access
/// order, each once. The file is text: a header of `key value` lines,
/// then one chunk index per line. Parsing treats the file as hostile.
public struct AccessTrace: Equatable, Sendable {
    public var objectSize: UInt64
    public var chunkSize: Int
    /// The object's size and validators as the probe saw them (ETag, Last-Modified).
    public var validator: String
    public var chunks: [Int]

    static let magic = "vduse-blk access trace 1"
    /// Larger files are refused before reading (2^24 chunks of up to 9 digits).
    static let maxFileBytes = 192 << 20

    public init(objectSize: UInt64, chunkSize: Int, validator: String, chunks: [Int]) {
        self.objectSize = objectSize
        self.chunkSize = chunkSize
        self.validator = validator
        self.chunks = chunks
    }

    var chunkCount: Int { chunkSize > 0 ? Int((objectSize + UInt64(chunkSize) - 1) / UInt64(chunkSize)) : 0 }

    /// The file's text.
    public func encoded() -> String {
        let cleanValidator = String(validator.unicodeScalars.filter { $0 != "\n" && $0 != "\r" })
        var text = "\(Self.magic)\nobject-size \(objectSize)\nchunk-size \(chunkSize)\nvalidator \(cleanValidator)\nchunks \(chunks.count)\n"
        text.reserveCapacity(text.utf8.count + chunks.count * 8)
        for c in chunks {
            text += String(c)
            text += "\n"
        }
        return text
    }

    /// Parses a trace file's bytes; every field is checked, indexes must lie
    /// in the object, repeats are dropped (first access wins).
    public static func parse(_ bytes: [UInt8]) throws(RemoteError) -> AccessTrace {
        guard bytes.count <= maxFileBytes else { throw .trace("larger than \(maxFileBytes) bytes") }
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)[...]
        if lines.last?.isEmpty == true { lines.removeLast() }
        func next(_ what: String) throws(RemoteError) -> String {
            guard let line = lines.popFirst() else { throw .trace("ends before its \(what)") }
            guard let text = String(validating: line, as: UTF8.self) else { throw .trace("\(what) is not UTF-8") }
            return text
        }
        func field(_ key: String) throws(RemoteError) -> String {
            let line = try next(key)
            guard line.hasPrefix(key + " ") else { throw .trace("expected '\(key) ...', found '\(line.prefix(60))'") }
            return String(line.dropFirst(key.count + 1))
        }
        guard try next("header") == magic else { throw .trace("not a vduse-blk access trace (first line is not '\(magic)')") }
        guard let objectSize = UInt64(try field("object-size")) else { throw .trace("object-size is not a number") }
        guard let chunkSize = Int(try field("chunk-size")), chunkSize >= 4096, chunkSize <= 1 << 30,
              chunkSize & (chunkSize - 1) == 0 else { throw .trace("chunk-size is not a power of two from 4K to 1G") }
        let validator = try field("validator")
        let count = Int(try field("chunks"))
        var trace = AccessTrace(objectSize: objectSize, chunkSize: chunkSize, validator: validator, chunks: [])
        guard objectSize / UInt64(chunkSize) < 1 << 24 else { throw .trace("more than 2^24 chunks") }
        let chunkCount = trace.chunkCount
        guard let count, count >= 0, count <= chunkCount else {
            throw .trace("the chunk count is not a number in 0...\(chunkCount)")
        }
        guard lines.count == count else { throw .trace("announces \(count) chunks but lists \(lines.count)") }
        var seen = [Bool](repeating: false, count: chunkCount)
        trace.chunks.reserveCapacity(count)
        for (i, line) in lines.enumerated() {
            guard line.count <= 10, !line.isEmpty, line.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                  let c = Int(String(decoding: line, as: UTF8.self)), c < chunkCount else {
                throw .trace("entry \(i + 1) is not a chunk index below \(chunkCount)")
            }
            if !seen[c] {
                seen[c] = true
                trace.chunks.append(c)
            }
        }
        return trace
    }

    /// Why this trace cannot be replayed against an object (nil: it can).
    public func mismatch(objectSize: UInt64, chunkSize: Int, validator: String) -> String? {
        if chunkSize != self.chunkSize { return "recorded with chunk=\(self.chunkSize), the device uses \(chunkSize)" }
        if objectSize != self.objectSize { return "recorded for an object of \(self.objectSize) bytes, this one has \(objectSize)" }
        if validator != self.validator { return "recorded for another version of the object (validator '\(self.validator)', now '\(validator)')" }
        return nil
    }

    /// Reads and parses the trace at `path`.
    public static func load(path: String) throws(RemoteError) -> AccessTrace {
        let bytes: [UInt8]
        do {
            let file = try PosixFile.openImage(path, flags: O_RDONLY)
            let size = try file.size()
            guard size <= UInt64(maxFileBytes) else { throw RemoteError.trace("\(path) is larger than \(maxFileBytes) bytes") }
            bytes = try file.read(count: Int(size), at: 0)
        } catch let e as RemoteError {
            throw e
        } catch {
            throw .trace("\(path): \(error)")
        }
        do { return try parse(bytes) } catch {
            if case .trace(let why) = error { throw .trace("\(path): \(why)") }
            throw error
        }
    }

    /// Writes the trace to `path` atomically (a temporary file, fsync, rename, fsync of the directory).
    public func write(path: String) throws(RemoteError) {
        let temporary = path + ".tmp"
        do {
            let file = try PosixFile.open(temporary, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC)
            try file.write(Array(encoded().utf8), at: 0)
            try file.sync()
            try PosixFile.rename(temporary, to: path)
            try PosixFile.syncDirectory(of: path)
        } catch {
            unlink(temporary)
            throw .trace("writing \(path): \(error)")
        }
    }
}
