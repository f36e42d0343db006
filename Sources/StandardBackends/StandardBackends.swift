import BlockBackends
import RemoteImage
import ZstdImage

extension BackendCatalog {
    /// Every backend this package ships: `file:`, `zstd:`, and remote
    /// images over `http://`, `https://` and `s3://`.
    public static let standard = BackendCatalog([
        FileBackendProvider(), ZstdBackendProvider(), RemoteBackendProvider(),
    ])
}
