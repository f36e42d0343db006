#!/usr/bin/env python3
"""gen_model.py OUT MIB - write a deterministic model-like file of MIB MiB.

Owns the bytes of bench-model-load.sh's model file: a safetensors-like layout,
an 8-byte little-endian header length, a JSON header naming every tensor, then
4 MiB blocks that alternate between incompressible bytes (Mersenne Twister,
seed 17 + block index: tensor weights) and repetitive text (metadata-like
lines with running counters: compresses about 10x). Half of the file is each
kind. The same MIB gives the same bytes on every run and machine.
"""
import json
import random
import sys

BLOCK = 4 << 20


def text_block(i: int) -> bytes:
    out = bytearray()
    n = 0
    while len(out) < BLOCK:
        out += (f'{{"layer": {i}, "tensor": "model.layers.{i}.mlp.w{n % 3}.weight", '
                f'"dtype": "BF16", "shape": [4096, 11008], "offset": {n * 90112}}}\n').encode()
        n += 1
    return bytes(out[:BLOCK])


def main() -> None:
    out, mib = sys.argv[1], int(sys.argv[2])
    total = mib << 20
    header = json.dumps({f"tensor.{k}": {"block": k} for k in range(total // BLOCK)}).encode()
    with open(out, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        written, i = 8 + len(header), 0
        while written < total:
            data = random.Random(17 + i).randbytes(BLOCK) if i % 2 == 0 else text_block(i)
            data = data[: total - written]
            f.write(data)
            written += len(data)
            i += 1


if __name__ == "__main__":
    main()
