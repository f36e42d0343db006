import ImageOverlay
import SystemSupport
import Glibc
import ZstdImage

/// Reads a remote object's bytes for open-time parsing (a zstd image's
/// header and seek table): waits for missing chunks, up to the fetch
/// deadline. Used by one thread, never a queue thread.
final class BlockingRemoteSource: ImageByteSource, @unchecked Sendable {
    let store: RemoteChunkStore
    let sourceName: String
    var byteCount: UInt64 { store.objectSize }
    private let waker: QueueWaker
    private var spare: UnsafeMutableRawPointer

    init(store: RemoteChunkStore, name: String) throws(RemoteError) {
        self.store = store
        sourceName = name
        do { waker = try QueueWaker() } catch { throw .system(error) }
        spare = .allocate(byteCount: store.chunkSize, alignment: 4096)
        store.register(waker, slot: RemoteChunkStore.blockingSlot)
    }

    deinit {
        store.unregister(slot: RemoteChunkStore.blockingSlot)
        spare.deallocate()
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws(ImageError) {
        guard offset <= byteCount, UInt64(count) <= byteCount - offset else {
            throw .truncated("\(sourceName) ends at \(byteCount), \(count) bytes were needed at \(offset)")
        }
        var done = 0
        while true {
            let (copied, missing) = store.copyLocal(into: buffer + done, count: count - done, at: offset + UInt64(done),
                                                    spare: &spare)
            done += copied
            guard let missing else { return }
            try waitForChunk(missing)
        }
    }

    private func waitForChunk(_ chunk: Int) throws(ImageError) {
        let serial = store.failureSerial
        guard store.request(chunk, waiter: RemoteChunkStore.blockingSlot, urgent: true) else {
            throw .io(what: "\(sourceName): the remote object changed", errno: EIO)
        }
        while !store.isLocal(chunk) {
            if store.failedSince(chunk, serial: serial) {
                throw .io(what: "\(sourceName): fetching chunk \(chunk) failed", errno: EIO)
            }
            waker.wait(milliseconds: 100)
        }
    }
}

/// Reads a remote object's bytes on a queue thread without ever waiting:
/// chunks in memory or on disk are served, a missing one throws EAGAIN and
/// is remembered in `missingChunk` so the caller can park the request.
/// Owned by one queue backend (its spare buffer is that queue's).
final class LocalRemoteSource: ImageByteSource, @unchecked Sendable {
    let store: RemoteChunkStore
    let sourceName: String
    var byteCount: UInt64 { store.objectSize }
    var spare: UnsafeMutableRawPointer
    /// The first chunk found missing by the last failed read (-1: none).
    var missingChunk = -1

    init(store: RemoteChunkStore, name: String) {
        self.store = store
        sourceName = name
        spare = .allocate(byteCount: store.chunkSize, alignment: 4096)
    }

    deinit { spare.deallocate() }

    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws(ImageError) {
        guard offset <= byteCount, UInt64(count) <= byteCount - offset else {
            throw .truncated("\(sourceName) ends at \(byteCount), \(count) bytes were needed at \(offset)")
        }
        if let missing = store.copyLocal(into: buffer, count: count, at: offset, spare: &spare).missing {
            missingChunk = missing
            throw .io(what: "chunk \(missing) not cached", errno: EAGAIN)
        }
    }
}
