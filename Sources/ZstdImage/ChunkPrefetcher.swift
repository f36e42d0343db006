import ImageOverlay
import SystemSupport

/// Sequential readahead: when a queue moves from chunk n-1 to chunk n, it
/// asks for chunk n+1, which one background thread decompresses into the
/// shared cache. Requests go through a small ring (dropped when full or when
/// the chunk is already cached), so asking never blocks on decompression.
/// Owns the thread: it stops and is joined when the prefetcher goes away.
final class ChunkPrefetcher: Sendable {
    private let state: PrefetchState
    private let thread: NamedThread

    init(image: SeekableImage, cache: ChunkCache) throws(ImageError) {
        let state = try PrefetchState(image: image, cache: cache)
        self.state = state
        do { thread = try NamedThread { state.run() } } catch { throw ImageError(error) }
    }

    deinit {
        state.stop()
        thread.join()
    }

    /// Asks for chunk `index` to be cached soon (ignored past the end).
    func request(_ index: Int) {
        state.request(index)
    }

    /// Chunks decompressed by readahead so far.
    var prefetched: Int { state.prefetchedCount }
}

/// The prefetch thread's state. `pending`, `head`, `count`, `stopped` and
/// `prefetched` are guarded by `monitor`; the decoder and buffer belong to the
/// thread. Hence `@unchecked Sendable`.
final class PrefetchState: @unchecked Sendable {
    private let image: SeekableImage
    private let cache: ChunkCache
    private let decoder: ChunkDecoder
    private var buffer: UnsafeMutableRawPointer
    private let monitor = Monitor()
    private static let ringSize = 8
    private var pending = [Int](repeating: 0, count: PrefetchState.ringSize)
    private var head = 0
    private var count = 0
    private var stopped = false
    private var prefetched = 0

    init(image: SeekableImage, cache: ChunkCache) throws(ImageError) {
        self.image = image
        self.cache = cache
        decoder = try ChunkDecoder(image: image)
        buffer = .allocate(byteCount: image.chunkSize, alignment: 4096)
    }

    deinit { buffer.deallocate() }

    var prefetchedCount: Int { monitor.withLock { prefetched } }

    func request(_ index: Int) {
        guard index >= 0, index < image.chunkCount else { return }
        monitor.withLock {
            guard count < Self.ringSize, !stopped else { return }
            for i in 0..<count where pending[(head + i) % Self.ringSize] == index { return }
            pending[(head + count) % Self.ringSize] = index
            count += 1
            monitor.broadcast()
        }
    }

    func stop() {
        monitor.withLock {
            stopped = true
            monitor.broadcast()
        }
    }

    func run() {
        while true {
            monitor.lock()
            while count == 0 && !stopped { monitor.wait() }
            if stopped {
                monitor.unlock()
                return
            }
            let index = pending[head]
            head = (head + 1) % Self.ringSize
            count -= 1
            monitor.unlock()
            if cache.contains(index) { continue }
            // A damaged chunk is reported when a queue reads it, not here.
            guard (try? decoder.decode(index, into: buffer)) != nil else { continue }
            cache.insert(index, buffer: &buffer)
            monitor.withLock { prefetched += 1 }
        }
    }
}
