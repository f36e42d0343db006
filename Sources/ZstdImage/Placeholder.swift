// placeholder: the zstd seekable image format and backend live here
