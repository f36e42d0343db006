#!/usr/bin/env python3
"""timed_read.py [T0_NS FILE...] - read every byte of the files, in order.

Owns the model-load benchmark's clock on the reader side: prints
"ttfb=SECONDS total=SECONDS bytes=N", the time from T0_NS (a CLOCK_REALTIME
timestamp in ns, `date +%s%N`, taken by the caller when the row started) to
the first block read, and to the last byte. 1 MiB reads into one buffer.
Without arguments it is a server (a bash coproc): prints "ready", then for
each line "T0_NS FILE..." on stdin reads and prints one result line, so the
interpreter's start-up (long under emulation) is never inside a measurement.
"""
import os
import sys
import time


def read_all(t0: int, paths: list[str]) -> str:
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    first = None
    total = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            while True:
                n = os.readv(fd, [view])
                if first is None:
                    first = time.time_ns()
                if n == 0:
                    break
                total += n
        finally:
            os.close(fd)
    end = time.time_ns()
    return f"ttfb={(first - t0) / 1e9:.3f} total={(end - t0) / 1e9:.3f} bytes={total}"


def main() -> None:
    if len(sys.argv) > 2:
        print(read_all(int(sys.argv[1]), sys.argv[2:]))
        return
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        try:
            print(read_all(int(words[0]), words[1:]), flush=True)
        except (OSError, ValueError, IndexError) as e:
            print(f"error={type(e).__name__}:{e}".replace(" ", "_"), flush=True)


if __name__ == "__main__":
    main()
