import Logging

/// `record-trace=` and `prefetch-trace=` for the remote backend: loading a
/// trace for this object, and writing the recorded one in object chunks.
extension RemoteBackendFactory {
    /// The trace at `path` if it can be replayed against `object`; a missing
    /// file or a trace of another object is a reason, not an error (the
    /// device works without it; the first start records it).
    static func loadTrace(path: String, object: ObjectInfo, chunkSize: Int) -> Result<AccessTrace, RemoteError> {
        do throws(RemoteError) {
            let trace = try AccessTrace.load(path: path)
            if let why = trace.mismatch(objectSize: object.size, chunkSize: chunkSize, validator: object.validator) {
                return .failure(.trace("\(path): \(why)"))
            }
            return .success(trace)
        } catch {
            return .failure(error)
        }
    }

    /// The recorded units as object chunks, in first-touch order: a zstd
    /// image's chunk maps to the object chunks its frame spans.
    func recordedObjectChunks() -> [Int] {
        guard let recorder else { return [] }
        let units = recorder.order()
        guard let image = zstdImage else { return units }
        var seen = Set<Int>()
        var chunks: [Int] = []
        for index in units where image.table.frameSize(index) > 0 {
            for c in image.objectChunks(ofFrame: index, shift: store.chunkShift) where seen.insert(c).inserted {
                chunks.append(c)
            }
        }
        return chunks
    }

    /// Writes the recorded trace (at shutdown); failures are logged.
    func writeTrace() {
        guard let recorder, !traceWritten else { return }
        traceWritten = true
        let trace = AccessTrace(objectSize: object.size, chunkSize: options.chunkSize, validator: object.validator,
                                chunks: recordedObjectChunks())
        do throws(RemoteError) {
            try trace.write(path: recorder.path)
            store.logger.info("record-trace: wrote \(trace.chunks.count) chunks to \(recorder.path)")
        } catch {
            store.logger.error("record-trace: \(error)")
        }
    }
}
