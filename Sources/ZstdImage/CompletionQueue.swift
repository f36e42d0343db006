import BlockBackends

/// A fixed-capacity FIFO of finished ops for one synchronous queue handle:
/// ops complete as they are prepared, and become reapable once `publish()`
/// (called by `submit()`) has run. Allocated once; owned by one queue thread.
final class CompletionQueue {
    let capacity: Int
    private let storage: UnsafeMutablePointer<IOCompletion>
    private var head = 0
    /// Completions held, published or not.
    private(set) var count = 0
    private var published = 0

    init(capacity: Int) {
        precondition(capacity > 0, "completion queue needs a positive capacity")
        self.capacity = capacity
        storage = .allocate(capacity: capacity)
        storage.initialize(repeating: IOCompletion(tag: 0, result: 0), count: capacity)
    }

    deinit {
        storage.deinitialize(count: capacity)
        storage.deallocate()
    }

    @inline(__always)
    func push(tag: UInt32, result: Int32) {
        precondition(count < capacity, "more ops in flight than the queue handle's capacity")
        var slot = head + count
        if slot >= capacity { slot -= capacity }
        storage[slot] = IOCompletion(tag: tag, result: result)
        count += 1
    }

    @inline(__always)
    func publish() { published = count }

    func pop(into buffer: UnsafeMutableBufferPointer<IOCompletion>) -> Int {
        let n = min(published, buffer.count)
        for i in 0..<n {
            buffer[i] = storage[head]
            head += 1
            if head == capacity { head = 0 }
        }
        published -= n
        count -= n
        return n
    }
}
