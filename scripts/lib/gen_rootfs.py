#!/usr/bin/env python3
"""gen_rootfs.py DIR LIST MIB - a deterministic container-rootfs-like tree.

Owns the data of bench-model-load.sh's container-start workload: DIR gets
about MIB MiB of files under usr/lib, usr/share, etc/, opt/app (sizes
log-normal around 24 KiB, 1 KiB to 4 MiB; every other file incompressible
bytes like a shared library, the rest repetitive text like sources and
configs). LIST gets the start-up set: one file in four, in a shuffled order
unrelated to where the files lie in the tree, as paths relative to DIR, one
a line: what a program opens and reads at start-up. Seeded: the same MIB
gives the same tree and list everywhere.
"""
import os
import random
import sys

DIRS = ["usr/lib/x86_64-linux-gnu", "usr/lib/python3/dist-packages/app", "usr/share/locale",
        "etc/app", "opt/app/bin", "opt/app/models", "usr/lib/node_modules/app"]


def text(rng: random.Random, n: int, name: str) -> bytes:
    out = bytearray()
    k = 0
    while len(out) < n:
        out += f"# {name} line {k}: def handler_{k % 97}(request): return render(request, {rng.randrange(1000)})\n".encode()
        k += 1
    return bytes(out[:n])


def main() -> None:
    root, listfile, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(23)
    target = mib << 20
    files = []
    total = 0
    i = 0
    while total < target:
        size = int(min(4 << 20, max(1024, rng.lognormvariate(10.1, 1.3))))
        size = min(size, target - total) or 1
        d = DIRS[i % len(DIRS)]
        name = f"{d}/f{i:05d}" + (".so" if i % 2 == 0 else ".txt")
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(random.Random(1000 + i).randbytes(size) if i % 2 == 0 else text(rng, size, name))
        files.append(name)
        total += size
        i += 1
    start = rng.sample(files, max(1, len(files) // 4))
    with open(listfile, "w") as f:
        f.write("\n".join(start) + "\n")


if __name__ == "__main__":
    main()
