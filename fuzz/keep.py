#!/usr/bin/env python3
"""Keeps a fuzz target's minimized corpus for the regression test: run from the repository
root after `cargo +nightly fuzz cmin <target>`. Writes fuzz/regressions/<target>/corpus.bin
(each input after its length, 4 bytes little-endian) and copies any crash artifacts beside it.
    python3 fuzz/keep.py <target>..."""
import os
import shutil
import struct
import sys

for target in sys.argv[1:]:
    src = os.path.join("fuzz", "corpus", target)
    dst = os.path.join("fuzz", "regressions", target)
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, "corpus.bin"), "wb") as out:
        for name in sorted(os.listdir(src)):
            data = open(os.path.join(src, name), "rb").read()
            out.write(struct.pack("<I", len(data)) + data)
    art = os.path.join("fuzz", "artifacts", target)
    for name in sorted(os.listdir(art)) if os.path.isdir(art) else []:
        shutil.copy(os.path.join(art, name), os.path.join(dst, name))
    print(target, len(os.listdir(src)), "inputs kept")
