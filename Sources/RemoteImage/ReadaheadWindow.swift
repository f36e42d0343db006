/// One queue's sequential readahead over object chunks: starts at `initial`
/// chunks ahead of the reader and doubles each time the reader enters a
/// new chunk, up to `maximum`; remembers how far it has asked so each chunk
/// is requested once per sequential run. Pure arithmetic (unit-tested);
/// owned by one queue's reader.
struct ReadaheadWindow: Equatable {
    let initial: Int
    let maximum: Int
    private(set) var window: Int
    /// The last chunk this run has asked for (-1: none).
    private(set) var askedThrough = -1
    private var readerChunk = -1

    init(initial: Int, maximum: Int) {
        self.initial = max(0, initial)
        self.maximum = max(self.initial, maximum)
        window = self.initial
    }

    var enabled: Bool { initial > 0 }

    /// A read that is not sequential: back to the initial window.
    mutating func reset() {
        window = initial
        askedThrough = -1
        readerChunk = -1
    }

    /// The reader's last byte is in `chunk`: the chunks to ask for now
    /// (nil when none are new).
    mutating func advance(readerAt chunk: Int, chunkCount: Int) -> ClosedRange<Int>? {
        guard enabled else { return nil }
        if chunk > readerChunk {
            if readerChunk >= 0 { window = min(maximum, window * 2) }
            readerChunk = chunk
        }
        let first = max(chunk + 1, askedThrough + 1)
        let last = min(chunk + window, chunkCount - 1)
        guard first <= last else { return nil }
        askedThrough = last
        return first...last
    }
}
