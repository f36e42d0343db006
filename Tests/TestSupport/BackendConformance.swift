import BlockBackends
import Glibc
import SystemSupport
import XCTest

/// A backend opened for one scenario, with whatever must outlive it (temp
/// directories, servers); `shutdown()` runs when the last reference goes.
public final class OpenedBackend {
    public let factory: any BlockBackendFactory
    private let keepAlive: [AnyObject]

    public init(_ factory: any BlockBackendFactory, keepAlive: [AnyObject] = []) {
        self.factory = factory
        self.keepAlive = keepAlive
    }

    deinit { factory.shutdown() }

    public var geometry: BackendGeometry { factory.geometry }

    public func queue(_ index: Int = 0, depth: Int = 8) throws -> any QueueBackend {
        try factory.makeQueueBackend(queueIndex: index, depth: depth)
    }
}

/// What every backend behind the `QueueBackend` seam must do, whatever it
/// stores data in. Each backend's XCTestCase (XCTest on Linux needs the
/// methods spelled out) builds one of these per test and calls the
/// scenarios that apply to it.
///
/// Backends are opened at `capacity` bytes, buffered (no O_DIRECT), with
/// whatever initial content they have (zeroes, an image): scenarios read
/// what is there before they change it.
public struct BackendConformance {
    /// How a backend treats requests whose offset or length is not a multiple of 512.
    public enum Misaligned {
        /// Served like any other request (the alignment is the caller's job:
        /// `BlkRequestParser` enforces it before a request reaches a backend).
        case served
        /// Writes, discards and write-zeroes refused with a negated errno;
        /// reads served (an overlay tracks whole sectors).
        case writesRefused
    }

    public static let capacity: UInt64 = 1 << 20

    /// Opens a fresh writable backend of `capacity` bytes.
    public var open: () throws -> OpenedBackend
    /// Opens a fresh read-only backend of `capacity` bytes.
    public var openReadOnly: () throws -> OpenedBackend
    /// False for backends that drop data (null): scenarios then check
    /// completions (tags, results, counts) but not bytes.
    public var storesData: Bool
    public var misaligned: Misaligned

    public init(storesData: Bool = true, misaligned: Misaligned = .served,
                open: @escaping () throws -> OpenedBackend,
                openReadOnly: @escaping () throws -> OpenedBackend) {
        self.open = open
        self.openReadOnly = openReadOnly
        self.storesData = storesData
        self.misaligned = misaligned
    }

    // MARK: helpers

    /// The whole device as read through `q`.
    private func readAll(_ q: any QueueBackend, _ capacity: UInt64,
                         file: StaticString = #filePath, line: UInt = #line) -> [UInt8] {
        let buffer = AlignedBuffer(count: Int(capacity), fill: 0xAA)
        XCTAssertEqual(readOp(q, buffer, at: 0, tag: 0xA11, file: file, line: line), Int32(capacity),
                       "reading the whole device", file: file, line: line)
        return buffer.bytes
    }

    /// Asserts `result` is a negated errno (what a refused op must complete with).
    private func assertNegatedErrno(_ result: Int32, _ what: String,
                                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(result < 0 && result > -4096, "\(what): \(result) is not a negated errno", file: file, line: line)
    }

    // MARK: scenarios

    /// Writes at several offsets and lengths (gathered from up to three
    /// iovecs) complete with their byte counts and read back identically
    /// through differently split iovecs (one of them empty); nothing outside
    /// the written ranges changes.
    public func writeThenReadBack() throws {
        let b = try open()
        let capacity = b.geometry.capacityBytes
        XCTAssertEqual(capacity, Self.capacity)
        XCTAssertFalse(b.geometry.readOnly)
        let q = try b.queue(depth: 8)
        var model = readAll(q, capacity)
        let cap = Int(capacity)
        // (offset, iovec lengths): the first sector, across 64 KiB and 256 KiB
        // (chunk edges of the image backends), an odd sector, an overwrite, the last sectors.
        let cases: [(Int, [Int])] = [
            (0, [512]),
            (61440, [4096, 512, 8192]),
            ((256 << 10) - 2048, [2048, 6144]),
            (300 * 1024 + 512, [1536]),
            (65536, [1024, 512]),
            (cap - 16384, [16384]),
        ]
        for (n, (offset, lengths)) in cases.enumerated() {
            let total = lengths.reduce(0, +)
            let data = pattern(total, seed: UInt8(40 + n))
            let out = AlignedBuffer(count: total)
            out.set(data)
            var iovs: [iovec] = []  // (valid until the op completed: used inside withUnsafeBufferPointer)
            var at = 0
            for length in lengths {
                iovs.append(out.iovec(at, length))
                at += length
            }
            let tag = UInt32(100 + n)
            iovs.withUnsafeBufferPointer { v in
                q.prepareWrite(offset: UInt64(offset), iovecs: v.baseAddress!, count: v.count, tag: tag)
                XCTAssertEqual(q.inFlight, 1)
                XCTAssertEqual(submitAndWait(q, count: 1), [IOCompletion(tag: tag, result: Int32(total))], "write \(n)")
            }
            XCTAssertEqual(q.inFlight, 0)
            if storesData { model.replaceSubrange(offset..<offset + total, with: data) }

            let back = AlignedBuffer(count: total, fill: 0xAA)
            let first = min(1000, total - 1)
            let riovs = [back.iovec(0, first), back.iovec(first, 0), back.iovec(first, total - first)]
            riovs.withUnsafeBufferPointer { v in
                q.prepareRead(offset: UInt64(offset), iovecs: v.baseAddress!, count: 3, tag: tag + 50)
                XCTAssertEqual(submitAndWait(q, count: 1), [IOCompletion(tag: tag + 50, result: Int32(total))], "read \(n)")
            }
            if storesData { XCTAssertTrue(back.bytes == data, "read back \(n) at \(offset)") }
        }
        if storesData {
            XCTAssertTrue(readAll(q, capacity) == model, "the device differs from what was written")
        }
    }

    /// FLUSH completes with 0 and its tag: on an idle queue, after a write,
    /// and prepared in one batch with a write.
    public func flushSucceeds() throws {
        let b = try open()
        let q = try b.queue(depth: 4)
        q.prepareFlush(tag: 41)
        XCTAssertEqual(submitAndWait(q, count: 1), [IOCompletion(tag: 41, result: 0)])
        XCTAssertEqual(writeOp(q, AlignedBuffer(count: 4096, fill: 5), at: 0), 4096)
        q.prepareFlush(tag: 42)
        XCTAssertEqual(submitAndWait(q, count: 1), [IOCompletion(tag: 42, result: 0)])
        let out = AlignedBuffer(count: 8192, fill: 6)
        let done = withUnsafePointer(to: out.iovec()) { iov in
            q.prepareWrite(offset: 8192, iovecs: iov, count: 1, tag: 43)
            q.prepareFlush(tag: 44)
            return submitAndWait(q, count: 2)
        }
        XCTAssertEqual(Set(done.map(\.tag)), [43, 44])
        XCTAssertEqual(done.first { $0.tag == 43 }?.result, 8192)
        XCTAssertEqual(done.first { $0.tag == 44 }?.result, 0)
    }

    /// Fills `[128K, 448K)` with a pattern, zeroes a large range crossing
    /// 256 KiB and a small one inside a page with `zero`, and checks that
    /// exactly those ranges read as zeroes.
    private func zeroing(_ what: String, supported: (BackendGeometry) -> Bool,
                         _ zero: (any QueueBackend, UInt64, UInt64, UInt32) -> Void) throws {
        let b = try open()
        guard supported(b.geometry) else { throw XCTSkip("\(what) is not supported by this backend") }
        let q = try b.queue(depth: 4)
        let start = 128 << 10, count = 320 << 10
        let data = pattern(count, seed: 9)
        let buffer = AlignedBuffer(count: count)
        buffer.set(data)
        XCTAssertEqual(writeOp(q, buffer, at: UInt64(start)), Int32(count))
        let ranges = [(192 << 10, 128 << 10), (400 << 10 + 512, 1536)]
        for (i, (offset, length)) in ranges.enumerated() {
            zero(q, UInt64(offset), UInt64(length), UInt32(70 + i))
            XCTAssertEqual(submitAndWait(q, count: 1), [IOCompletion(tag: UInt32(70 + i), result: 0)],
                           "\(what) at \(offset)")
        }
        guard storesData else { return }
        let back = AlignedBuffer(count: count, fill: 0xAA)
        XCTAssertEqual(readOp(q, back, at: UInt64(start)), Int32(count))
        var expected = data
        for (offset, length) in ranges {
            expected.replaceSubrange(offset - start..<offset - start + length, with: [UInt8](repeating: 0, count: length))
        }
        let got = back.bytes
        XCTAssertTrue(got == expected, "\(what): first difference at byte "
                      + "\(start + (got.indices.first { got[$0] != expected[$0] } ?? -1))")
    }

    /// DISCARD (where the geometry offers it) completes with 0 and the range reads as zeroes.
    public func discardReadsZeroes() throws {
        try zeroing("discard", supported: \.supportsDiscard) { q, offset, length, tag in
            q.prepareDiscard(offset: offset, length: length, tag: tag)
        }
    }

    /// WRITE_ZEROES with and without unmap (where the geometry offers it) reads as zeroes.
    public func writeZeroesReadZeroes() throws {
        for unmap in [false, true] {
            try zeroing("write-zeroes (unmap: \(unmap))", supported: \.supportsWriteZeroes) { q, offset, length, tag in
                q.prepareWriteZeroes(offset: offset, length: length, unmap: unmap, tag: tag)
            }
        }
    }

    /// A queue accepts `capacity` ops in flight at once; their completions,
    /// reaped in odd-sized batches in whatever order they come, carry each
    /// (scrambled) tag exactly once with its result. Then reads are kept at
    /// the queue's capacity, refilling each slot as soon as its completion is
    /// reaped, for three rounds of the ring; each returns its own block.
    public func manyInFlight() throws {
        let depth = 64
        let b = try open()
        let q = try b.queue(depth: depth)
        XCTAssertEqual(q.capacity, depth)
        let blocks = (0..<depth).map { i -> AlignedBuffer in
            let buffer = AlignedBuffer(count: 4096)
            buffer.set(pattern(4096, seed: UInt8(i)))
            return buffer
        }
        let iovs = UnsafeMutablePointer<iovec>.allocate(capacity: depth)
        defer { iovs.deallocate() }
        // Block i goes to offset (63 - i) * 4096 under tag 1000 + (i * 37) % 64.
        func writeTag(_ i: Int) -> UInt32 { UInt32(1000 + (i * 37) % depth) }
        for i in 0..<depth {
            iovs[i] = blocks[i].iovec()
            q.prepareWrite(offset: UInt64((depth - 1 - i) * 4096), iovecs: iovs + i, count: 1, tag: writeTag(i))
        }
        XCTAssertEqual(q.inFlight, depth)
        let writes = submitAndWait(q, count: depth, reapBatch: 5)
        XCTAssertEqual(writes.map(\.tag).sorted(), (0..<depth).map { writeTag($0) }.sorted(), "each tag exactly once")
        XCTAssertTrue(writes.allSatisfy { $0.result == 4096 }, "\(writes.filter { $0.result != 4096 })")
        XCTAssertEqual(q.inFlight, 0)

        // Rolling reads: read k (tag 5000 + k) reads block (k * 17) % 64 into slot `slotOf[tag]`.
        let slots = (0..<depth).map { _ in AlignedBuffer(count: 4096, fill: 0xAA) }
        var slotOf: [UInt32: Int] = [:]
        var free = Array(0..<depth)
        let total = 3 * depth
        var issued = 0, completed = 0
        func issue() {
            while issued < total, let slot = free.popLast() {
                let block = (issued * 17) % depth
                let tag = UInt32(5000 + issued)
                memset(slots[slot].base, 0xAA, 4096)
                iovs[slot] = slots[slot].iovec()
                slotOf[tag] = slot
                q.prepareRead(offset: UInt64((depth - 1 - block) * 4096), iovecs: iovs + slot, count: 1, tag: tag)
                issued += 1
            }
            XCTAssertLessThanOrEqual(q.inFlight, depth)
            q.submit()
        }
        issue()
        XCTAssertEqual(q.inFlight, depth)
        while completed < total {
            let got = reapSome(q, batch: 7)
            if got.isEmpty { break }
            for c in got {
                guard let slot = slotOf.removeValue(forKey: c.tag) else {
                    XCTFail("unknown or repeated tag \(c.tag)")
                    continue
                }
                XCTAssertEqual(c.result, 4096, "read \(c.tag)")
                let block = (Int(c.tag - 5000) * 17) % depth
                if storesData { XCTAssertTrue(slots[slot].bytes == blocks[block].bytes, "read \(c.tag) of block \(block)") }
                free.append(slot)
                completed += 1
            }
            issue()
        }
        XCTAssertEqual(completed, total)
        XCTAssertEqual(q.inFlight, 0)
    }

    /// Reaping with room for one completion at a time still delivers every
    /// one, once (an eventfd drained once must not strand the rest).
    public func reapOneAtATime() throws {
        let b = try open()
        let q = try b.queue(depth: 8)
        let buffers = (0..<8).map { i -> AlignedBuffer in
            let buffer = AlignedBuffer(count: 4096)
            buffer.set(pattern(4096, seed: UInt8(200 + i)))
            return buffer
        }
        let iovs = UnsafeMutablePointer<iovec>.allocate(capacity: 16)
        defer { iovs.deallocate() }
        for i in 0..<8 {
            iovs[i] = buffers[i].iovec()
            q.prepareWrite(offset: UInt64(i * 8192), iovecs: iovs + i, count: 1, tag: UInt32(i))
        }
        q.submit()
        // Give every op time to finish, so one drain of the eventfd covers them all.
        usleep(200_000)
        let writes = waitFor(q, count: 8, reapBatch: 1)
        XCTAssertEqual(writes.map(\.tag).sorted(), Array(0..<8))
        XCTAssertTrue(writes.allSatisfy { $0.result == 4096 })

        let backs = (0..<8).map { _ in AlignedBuffer(count: 4096, fill: 0xAA) }
        for i in 0..<8 {
            iovs[8 + i] = backs[i].iovec()
            q.prepareRead(offset: UInt64(i * 8192), iovecs: iovs + 8 + i, count: 1, tag: UInt32(10 + i))
        }
        q.submit()
        usleep(200_000)
        let reads = waitFor(q, count: 8, reapBatch: 1)
        XCTAssertEqual(reads.map(\.tag).sorted(), Array(10..<18))
        XCTAssertTrue(reads.allSatisfy { $0.result == 4096 })
        if storesData {
            for i in 0..<8 { XCTAssertTrue(backs[i].bytes == buffers[i].bytes, "block \(i)") }
        }
        XCTAssertEqual(q.inFlight, 0)
    }

    /// Reads reaching past the end (or wrapping around 2^64) complete with a
    /// negated errno and their own tag; the queue keeps working.
    public func outOfRangeReadsFail() throws {
        try outOfRange(writes: false)
    }

    /// Writes, discards and write-zeroes reaching past the end (or wrapping
    /// around 2^64) complete with a negated errno and their own tag; the
    /// queue keeps working.
    public func outOfRangeWritesFail() throws {
        try outOfRange(writes: true)
    }

    private func outOfRange(writes: Bool) throws {
        let b = try open()
        let capacity = b.geometry.capacityBytes
        let q = try b.queue(depth: 4)
        let buffer = AlignedBuffer(count: 1024, fill: 0x77)
        var tag: UInt32 = 300
        func expectRefused(_ what: String, line: UInt = #line, _ prepare: (UInt32) -> Void) {
            tag += 1
            prepare(tag)
            let done = submitAndWait(q, count: 1, line: line)
            XCTAssertEqual(done.map(\.tag), [tag], what, line: line)
            if let result = done.first?.result { assertNegatedErrno(result, what, line: line) }
        }
        let reads: [(UInt64, Int)] = [(capacity - 512, 1024), (capacity, 512), (capacity + 4096, 512), (UInt64.max - 511, 1024)]
        let iov = UnsafeMutablePointer<iovec>.allocate(capacity: 1)
        defer { iov.deallocate() }
        for (offset, length) in reads where !writes {
            iov.pointee = buffer.iovec(0, length)
            expectRefused("read of \(length) at \(offset)") { q.prepareRead(offset: offset, iovecs: iov, count: 1, tag: $0) }
        }
        for (offset, length) in reads where writes {
            iov.pointee = buffer.iovec(0, length)
            expectRefused("write of \(length) at \(offset)") { q.prepareWrite(offset: offset, iovecs: iov, count: 1, tag: $0) }
        }
        let extents: [(UInt64, UInt64)] = [(capacity - 512, 1024), (capacity, 512), (UInt64.max - 511, 1024)]
        if writes && b.geometry.supportsDiscard {
            for (offset, length) in extents {
                expectRefused("discard of \(length) at \(offset)") { q.prepareDiscard(offset: offset, length: length, tag: $0) }
            }
        }
        if writes && b.geometry.supportsWriteZeroes {
            for (offset, length) in extents {
                expectRefused("write-zeroes of \(length) at \(offset)") {
                    q.prepareWriteZeroes(offset: offset, length: length, unmap: false, tag: $0)
                }
            }
        }
        XCTAssertEqual(readOp(q, buffer, at: capacity - 1024), 1024, "the last sectors are still readable")
        XCTAssertEqual(q.inFlight, 0)
    }

    /// Requests whose offset or length is not a multiple of 512 complete
    /// once, with their tag: either served correctly or (per `misaligned`)
    /// refused with a negated errno — never a crash.
    public func misalignedRequests() throws {
        let b = try open()
        let q = try b.queue(depth: 4)
        let d = QueueDriver(q)
        let before = d.read(0, 8192).bytes
        // Reads are served by every backend that stores data.
        let (rc, odd) = d.read(100, 1000)
        XCTAssertEqual(rc, 1000, "misaligned read")
        if storesData { XCTAssertTrue(odd == Array(before[100..<1100]), "misaligned read returned the wrong bytes") }

        let data = pattern(1000, seed: 61)
        let write = d.write(4096 + 100, data)
        let shortWrite = d.write(0, Array(data[0..<100]))
        let discard = b.geometry.supportsDiscard ? d.discard(100, 512) : nil
        let zeroes = b.geometry.supportsWriteZeroes ? d.writeZeroes(1024 + 7, 100) : nil
        switch misaligned {
        case .served:
            XCTAssertEqual(write, 1000)
            XCTAssertEqual(shortWrite, 100)
            if let discard { XCTAssertEqual(discard, 0) }
            if let zeroes { XCTAssertEqual(zeroes, 0) }
            guard storesData else { return }
            var expected = before
            expected.replaceSubrange(4196..<5196, with: data)
            expected.replaceSubrange(0..<100, with: data[0..<100])
            if discard != nil { expected.replaceSubrange(100..<612, with: [UInt8](repeating: 0, count: 512)) }
            if zeroes != nil { expected.replaceSubrange(1031..<1131, with: [UInt8](repeating: 0, count: 100)) }
            XCTAssertTrue(d.read(0, 8192).bytes == expected, "misaligned ops changed the wrong bytes")
        case .writesRefused:
            assertNegatedErrno(write, "misaligned write")
            assertNegatedErrno(shortWrite, "short write")
            if let discard { assertNegatedErrno(discard, "misaligned discard") }
            if let zeroes { assertNegatedErrno(zeroes, "misaligned write-zeroes") }
            if storesData { XCTAssertTrue(d.read(0, 8192).bytes == before, "refused ops changed bytes") }
        }
        XCTAssertEqual(q.inFlight, 0)
    }

    /// A read-only backend says so in its geometry, refuses writes, discards
    /// and write-zeroes with a negated errno (changing nothing), still reads
    /// and flushes.
    public func readOnlyRefusesWrites() throws {
        let b = try openReadOnly()
        XCTAssertTrue(b.geometry.readOnly)
        XCTAssertFalse(b.geometry.supportsDiscard)
        XCTAssertFalse(b.geometry.supportsWriteZeroes)
        let q = try b.queue(depth: 4)
        let d = QueueDriver(q)
        let (rc, before) = d.read(0, 16384)
        XCTAssertEqual(rc, 16384)
        assertNegatedErrno(d.write(4096, pattern(8192, seed: 4)), "write")
        assertNegatedErrno(d.discard(0, 4096), "discard")
        assertNegatedErrno(d.writeZeroes(8192, 4096, unmap: false), "write-zeroes")
        assertNegatedErrno(d.writeZeroes(8192, 4096, unmap: true), "write-zeroes with unmap")
        XCTAssertEqual(d.flush(), 0)
        let (rc2, after) = d.read(0, 16384)
        XCTAssertEqual(rc2, 16384)
        if storesData { XCTAssertTrue(after == before, "a refused op changed the device") }
        XCTAssertEqual(q.inFlight, 0)
    }

    /// Two queue handles of one factory: each sees the other's writes (and
    /// discards) once they completed; async engines give each its own completion fd.
    public func queuesSeeEachOthersWrites() throws {
        let b = try open()
        let a = QueueDriver(try b.queue(0, depth: 4))
        let c = QueueDriver(try b.queue(1, depth: 4))
        if a.queue.completionFD >= 0 { XCTAssertNotEqual(a.queue.completionFD, c.queue.completionFD) }
        let one = pattern(8192, seed: 77), two = pattern(4096, seed: 78)
        XCTAssertEqual(a.write(4096, one), 8192)
        XCTAssertEqual(c.write(65536, two), 4096)
        let (r1, seenByC) = c.read(4096, 8192)
        let (r2, seenByA) = a.read(65536, 4096)
        XCTAssertEqual(r1, 8192)
        XCTAssertEqual(r2, 4096)
        if storesData {
            XCTAssertTrue(seenByC == one, "queue 1 sees queue 0's write")
            XCTAssertTrue(seenByA == two, "queue 0 sees queue 1's write")
        }
        if b.geometry.supportsDiscard {
            XCTAssertEqual(a.discard(4096, 4096), 0)
            let (r3, after) = c.read(4096, 8192)
            XCTAssertEqual(r3, 8192)
            if storesData {
                XCTAssertTrue(after == [UInt8](repeating: 0, count: 4096) + one[4096...], "queue 1 sees queue 0's discard")
            }
        }
    }
}
