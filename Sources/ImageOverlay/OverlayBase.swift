import BlockBackends
import SystemSupport

/// What an overlay is layered over: the identity recorded in its superblock
/// (an overlay opened over anything else is refused) and a name for messages.
/// Built from a zstd seekable image, or by other backends (a remote raw
/// object) from whatever identifies their base.
public struct OverlayBase: Sendable, Equatable {
    public var logicalSize: UInt64
    public var chunkSize: Int
    public var contentDigest: UInt64
    public var name: String

    public init(logicalSize: UInt64, chunkSize: Int, contentDigest: UInt64, name: String) {
        self.logicalSize = logicalSize
        self.chunkSize = chunkSize
        self.contentDigest = contentDigest
        self.name = name
    }

    public var identity: OverlaySuperblock.BaseIdentity {
        OverlaySuperblock.BaseIdentity(logicalSize: logicalSize, chunkSize: chunkSize, contentDigest: contentDigest)
    }
}
