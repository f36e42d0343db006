import ImageOverlay
import BlockBackends
import Glibc
import SystemSupport
import Logging
import Synchronization
import ZstdImage

/// The local disk tier: a sparse file as large as the remote object holding
/// fetched chunks at their own offsets, plus a metadata file with the
/// object's identity (size, chunk size, ETag / Last-Modified), a
/// present-bitmap and an XXH64 per chunk. Reused after a restart while the
/// identity matches; reset when the remote object changed. A chunk is marked
/// present on disk only after its data was fdatasync'd, and its hash is
/// checked on every read, so a crash or a damaged file costs a refetch,
/// never wrong data. With a budget (`cache-size=`) the data file never
/// holds more chunks than the budget allows: least recently used chunks are
/// evicted in batches (`DiskCacheBudget`), each marked absent in durable
/// metadata before its blocks are punched out, so a restart never takes a
/// punched chunk for a present one (eviction: DiskChunkCacheEviction.swift).
/// Owns both files (the data file is flock'ed); the bitmap, hashes and LRU
/// list are guarded by one mutex (touched once per chunk, not per request).
@_spi(Fuzzing) public final class DiskChunkCache: @unchecked Sendable {
    @_spi(Fuzzing) public struct Identity: Equatable {
        var objectSize: UInt64
        var chunkSize: Int
        var validator: String

        /// The memberwise initializer, spelled out so fuzz-remote can reach it.
        @_spi(Fuzzing) public init(objectSize: UInt64, chunkSize: Int, validator: String) {
            self.objectSize = objectSize
            self.chunkSize = chunkSize
            self.validator = validator
        }
    }

    let dataPath: String
    let metaPath: String
    let identity: Identity
    let chunkCount: Int
    let dataFD: Int32
    /// What open() found: "reused N chunks", "new", or why the old cache was reset.
    let openNote: String
    /// Bytes the data file may hold (nil: unbounded).
    let budgetBytes: UInt64?
    let logger: Logger

    struct State {
        var present: [UInt64]
        var hashes: [UInt64]
        /// Chunks written but not yet durable: bits set in `present` at the next persist.
        var pending: [(Int, UInt64)] = []
        var lastPersist: Double = 0
        var presentCount = 0
        /// Bounded cache only: the watermarks and the LRU list of present chunks.
        var budget: DiskCacheBudget?
        /// Bounded cache only: absent chunks whose blocks may still hold data
        /// (forgotten, or an eviction whose punch failed); punched after the
        /// next metadata write.
        var stale: [Int] = []
        /// Chunks evicted (punched out) since open.
        var evicted: UInt64 = 0

        /// Chunks whose blocks the data file may hold (an upper bound).
        var allocated: Int { presentCount + pending.count + stale.count }
    }
    let state: Guarded<State>
    let persistLock = Guarded<Void>(())

    static let magic: [UInt8] = Array("VBRCACH1".utf8)
    static let maxValidator = 1024

    /// Opens (or creates) the cache of one object under `directory`;
    /// `budgetBytes` bounds the data file (at least two chunks).
    init(directory: String, key: String, identity: Identity, budgetBytes: UInt64? = nil,
         logger: Logger) throws(RemoteError) {
        guard identity.validator.utf8.count <= Self.maxValidator else { throw .cache("object validator too long") }
        guard identity.chunkSize > 0, identity.objectSize / UInt64(identity.chunkSize) < 1 << 28 else {
            throw .cache("\(identity.objectSize) bytes in chunks of \(identity.chunkSize) is too many chunks")
        }
        if let budgetBytes, budgetBytes / UInt64(identity.chunkSize) < 2 {
            throw .cache("a budget of \(budgetBytes) bytes holds fewer than 2 chunks of \(identity.chunkSize)")
        }
        self.budgetBytes = budgetBytes
        self.logger = logger
        try Self.makeDirectories(directory)
        let dataPath = "\(directory)/\(key).data"
        self.dataPath = dataPath
        metaPath = "\(directory)/\(key).meta"
        self.identity = identity
        chunkCount = Int((identity.objectSize + UInt64(identity.chunkSize) - 1) / UInt64(identity.chunkSize))
        let fd: Int32
        do {
            fd = try sysCall("open \(dataPath)") { open(dataPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600) }
        } catch { throw .cache(error.description) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            close(fd)
            throw .cache("\(dataPath) is in use by another vduse-blk process")
        }
        dataFD = fd
        let words = (chunkCount + 63) / 64
        var st = State(present: [UInt64](repeating: 0, count: words), hashes: [UInt64](repeating: 0, count: chunkCount))
        var note = "new disk cache \(dataPath)"
        switch Self.loadMeta(metaPath, identity: identity, chunkCount: chunkCount) {
        case .success(let loaded):
            st.present = loaded.present
            st.hashes = loaded.hashes
            st.presentCount = loaded.present.reduce(0) { $0 + $1.nonzeroBitCount }
            note = "reusing disk cache \(dataPath): \(st.presentCount) of \(chunkCount) chunks present"
        case .failure(let reason):
            if reason.reason != "missing" {
                note = "disk cache \(dataPath) reset: \(reason.reason)"
                logger.warning("\(note)")
            }
            // Start empty: drop old data before the new metadata can claim any of it.
            _ = ftruncate(fd, 0)
        }
        openNote = note
        if ftruncate(fd, off_t(identity.objectSize)) != 0 {
            let e = errno
            close(fd)
            throw .system(what: "ftruncate \(dataPath)", errno: e)
        }
        if let budgetBytes {
            var budget = DiskCacheBudget(budgetBytes: budgetBytes, chunkSize: identity.chunkSize, chunkCount: chunkCount)
            // Recency is not persisted: after a restart, lower chunks go first.
            for chunk in 0..<chunkCount where st.present[chunk >> 6] & (1 << UInt64(chunk & 63)) != 0 {
                budget.touch(chunk)
            }
            st.budget = budget
            // Chunks written but never marked present (a crash), or marked absent
            // but not punched yet: free their blocks before counting on the budget.
            do throws(RemoteError) { try Self.punchAbsent(fd, present: st.present, chunkCount: chunkCount,
                                                           chunkSize: identity.chunkSize, path: dataPath) } catch {
                close(fd)
                throw error
            }
        }
        state = Guarded(st)
        do throws(RemoteError) {
            if case .failure = Self.loadMeta(metaPath, identity: identity, chunkCount: chunkCount) {
                try persist(force: true)
            }
            // The budget shrank since the last run: evict down to it now.
            if let high = st.budget?.highChunks, st.presentCount >= high { try commit(force: true, evict: true) }
        } catch {
            close(fd)
            throw error
        }
    }

    /// Set by tests: the next close skips the final persist, like a crash.
    var abandoned = false

    deinit {
        if !abandoned { try? persist(force: true) }
        close(dataFD)
    }

    var presentChunks: Int { state.withLock { $0.presentCount } }

    func isPresent(_ chunk: Int) -> Bool {
        guard chunk >= 0 && chunk < chunkCount else { return false }
        return state.withLock { $0.present[chunk >> 6] & (1 << UInt64(chunk & 63)) != 0 }
    }

    func chunkLength(_ chunk: Int) -> Int {
        let start = UInt64(chunk) * UInt64(identity.chunkSize)
        return Int(min(UInt64(identity.chunkSize), identity.objectSize - start))
    }

    /// Reads chunk `chunk` into `buffer` if present and intact; a hash
    /// mismatch forgets the chunk (it will be fetched again).
    func read(_ chunk: Int, into buffer: UnsafeMutableRawPointer) -> Bool {
        guard chunk >= 0 && chunk < chunkCount else { return false }
        let expected: UInt64? = state.withLock { s in
            guard s.present[chunk >> 6] & (1 << UInt64(chunk & 63)) != 0 else { return nil }
            s.budget?.touch(chunk)
            return s.hashes[chunk]
        }
        guard let expected else { return false }
        let length = chunkLength(chunk)
        let offset = UInt64(chunk) * UInt64(identity.chunkSize)
        guard PositionalIO.readFully(dataFD, into: buffer, count: length, at: offset) == length else { return false }
        guard XXH64.hash(UnsafeRawBufferPointer(start: buffer, count: length)) == expected else {
            forget(chunk)
            return false
        }
        return true
    }

    /// Stores a fetched chunk; it becomes present after the next persist.
    /// A bounded cache first makes room for it (and skips it when it cannot).
    /// One writer at a time (the disk writer thread).
    func store(_ chunk: Int, from buffer: UnsafeRawPointer) {
        guard chunk >= 0 && chunk < chunkCount, makeRoom() else { return }
        let length = chunkLength(chunk)
        let offset = UInt64(chunk) * UInt64(identity.chunkSize)
        // Overwritten now: a pending punch of its old blocks would destroy the new data.
        if budgetBytes != nil { state.withLock { s in s.stale.removeAll { $0 == chunk } } }
        // Disk full or an I/O error: the chunk just stays uncached on disk.
        guard PositionalIO.writeFully(dataFD, buffer, count: length, at: offset) == length else { return }
        let hash = XXH64.hash(UnsafeRawBufferPointer(start: buffer, count: length))
        state.withLock { $0.pending.append((chunk, hash)) }
    }

    func forget(_ chunk: Int) {
        state.withLock { s in
            let bit: UInt64 = 1 << UInt64(chunk & 63)
            if s.present[chunk >> 6] & bit != 0 {
                s.present[chunk >> 6] &= ~bit
                s.presentCount -= 1
                if s.budget != nil {
                    s.budget!.remove(chunk)
                    s.stale.append(chunk)
                }
            }
        }
    }

    /// Makes pending chunks durable and records them (at most once a second unless forced).
    func persist(force: Bool = false) throws(RemoteError) {
        try commit(force: force, evict: false)
    }

    // MARK: metadata file

    @_spi(Fuzzing) public static func encodeMeta(identity: Identity, present: [UInt64], hashes: [UInt64]) -> [UInt8] {
        var out = magic
        func put64(_ v: UInt64) { for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
        put64(identity.objectSize)
        put64(UInt64(identity.chunkSize))
        let validator = Array(identity.validator.utf8)
        put64(UInt64(validator.count))
        out += validator
        put64(UInt64(hashes.count))
        for w in present { put64(w) }
        for h in hashes { put64(h) }
        put64(out.withUnsafeBytes { XXH64.hash($0) })
        return out
    }

    @_spi(Fuzzing) public struct Loaded {
        @_spi(Fuzzing) public var present: [UInt64]
        @_spi(Fuzzing) public var hashes: [UInt64]
    }

    /// Reads and checks a metadata file (untrusted bytes: every length is bounded).
    static func loadMeta(_ path: String, identity: Identity, chunkCount: Int) -> Result<Loaded, MetaProblem> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(MetaProblem(errno == ENOENT ? "missing" : "cannot open metadata: errno \(errno)")) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size > 0, st.st_size < (1 << 30) else { return .failure(MetaProblem("metadata unreadable")) }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n == bytes.count else { return .failure(MetaProblem("metadata short read")) }
        return decodeMeta(bytes, identity: identity, chunkCount: chunkCount)
    }

    @_spi(Fuzzing) public static func decodeMeta(_ bytes: [UInt8], identity: Identity, chunkCount: Int) -> Result<Loaded, MetaProblem> {
        var at = 0
        func get64() -> UInt64? {
            guard at + 8 <= bytes.count else { return nil }
            var v: UInt64 = 0
            for i in 0..<8 { v |= UInt64(bytes[at + i]) << (8 * UInt64(i)) }
            at += 8
            return v
        }
        guard bytes.count >= magic.count + 8, Array(bytes[0..<magic.count]) == magic else { return .failure(MetaProblem("bad metadata magic")) }
        let body = bytes.count - 8
        let stored = bytes.withUnsafeBytes { b -> UInt64 in b.loadUnaligned(fromByteOffset: body, as: UInt64.self) }
        let actual = bytes.withUnsafeBytes { XXH64.hash(UnsafeRawBufferPointer(rebasing: $0[0..<body])) }
        guard UInt64(littleEndian: stored) == actual else { return .failure(MetaProblem("metadata checksum mismatch (damaged)")) }
        at = magic.count
        guard let size = get64(), let chunk = get64(), let vlen = get64(), vlen <= UInt64(maxValidator),
              at + Int(vlen) <= body else { return .failure(MetaProblem("metadata header malformed")) }
        let validator = String(decoding: bytes[at..<(at + Int(vlen))], as: UTF8.self)
        at += Int(vlen)
        guard size == identity.objectSize else { return .failure(MetaProblem("the remote object's size changed (\(size) -> \(identity.objectSize) bytes)")) }
        guard validator == identity.validator else { return .failure(MetaProblem("the remote object changed (validator '\(validator)' -> '\(identity.validator)')")) }
        guard chunk == UInt64(identity.chunkSize) else { return .failure(MetaProblem("chunk size changed (\(chunk) -> \(identity.chunkSize))")) }
        guard let count = get64(), count == UInt64(chunkCount) else { return .failure(MetaProblem("metadata chunk count malformed")) }
        let words = (chunkCount + 63) / 64
        guard body - at == 8 * (words + chunkCount) else { return .failure(MetaProblem("metadata length malformed")) }
        var present = [UInt64](repeating: 0, count: words)
        for i in 0..<words { present[i] = get64()! }
        if chunkCount & 63 != 0, present[words - 1] >> UInt64(chunkCount & 63) != 0 {
            return .failure(MetaProblem("metadata marks chunks past the end"))
        }
        var hashes = [UInt64](repeating: 0, count: chunkCount)
        for i in 0..<chunkCount { hashes[i] = get64()! }
        return .success(Loaded(present: present, hashes: hashes))
    }

    static func writeAtomically(_ bytes: [UInt8], to path: String) throws(RemoteError) {
        let tmp = path + ".tmp"
        let fd = sysCallResult { open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { throw .system(what: "open \(tmp)", errno: -fd) }
        let written = bytes.withUnsafeBytes { b in
            b.baseAddress.map { PositionalIO.writeFully(fd, $0, count: b.count, at: 0) } ?? 0
        }
        if written < 0 {
            close(fd)
            throw .system(what: "write \(tmp)", errno: Int32(-written))
        }
        let synced = sysCallResult { fsync(fd) }
        guard synced == 0 else {
            close(fd)
            throw .system(what: "fsync \(tmp)", errno: -synced)
        }
        close(fd)
        guard rename(tmp, path) == 0 else { throw .system(what: "rename \(tmp)", errno: errno) }
        let dir = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }

    static func makeDirectories(_ path: String) throws(RemoteError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw .system(what: "mkdir \(prefix)", errno: errno)
            }
        }
    }
}

/// Why a metadata file was not reused.
@_spi(Fuzzing) public struct MetaProblem: Error, Equatable {
    @_spi(Fuzzing) public var reason: String
    init(_ reason: String) { self.reason = reason }
}
