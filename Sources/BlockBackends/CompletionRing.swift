import SystemSupport

/// A fixed-capacity FIFO of finished ops, allocated once when a queue handle is
/// made. Completions are pushed as ops finish and become poppable only once
/// `publish()` has been called (engines publish in `submit()`), which keeps
/// the "ready after submit" contract of synchronous engines exact. Shared by
/// every synchronous backend (memory, null, sync file, zstd).
public final class CompletionRing {
    public let capacity: Int
    private let storage: UnsafeMutablePointer<IOCompletion>
    private var head = 0
    /// Completions held, published or not.
    public private(set) var count = 0
    /// Completions that `pop` may hand out.
    public private(set) var published = 0

    public init(capacity: Int) {
        precondition(capacity > 0, "completion ring needs a positive capacity")
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
        storage.initialize(repeating: IOCompletion(tag: 0, result: 0), count: capacity)
    }

    deinit {
        storage.deallocate()
    }

    /// Completions pushed since the last `publish()`.
    public var unpublished: Int { count - published }

    @inline(__always)
    public func push(tag: UInt32, result: Int32) {
        precondition(count < capacity, "more ops in flight than the queue handle's capacity")
        var slot = head + count
        if slot >= capacity { slot -= capacity }
        storage[slot] = IOCompletion(tag: tag, result: result)
        count += 1
    }

    @inline(__always)
    public func publish() {
        published = count
    }

    /// Moves up to `buffer.count - start` published completions into
    /// `buffer[start...]`; returns how many.
    @inline(__always)
    public func pop(into buffer: UnsafeMutableBufferPointer<IOCompletion>, at start: Int = 0) -> Int {
        let n = min(published, buffer.count - start)
        for i in 0..<n {
            buffer[start + i] = storage[head]
            head += 1
            if head == capacity { head = 0 }
        }
        published -= n
        count -= n
        return n
    }
}
