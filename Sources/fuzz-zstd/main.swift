// libFuzzer target: zstd seekable image files (SeekableImage.open, ChunkDecoder). See Fuzz/README.md.
import FuzzHarness

FuzzMain.run("zstd", ZstdImageFuzzer.run)
