#!/usr/bin/env python3
"""Rewrites PNG files with their image data recompressed at zlib level 9
(lossless: the same pixels). `lpaf plot`'s encoder favours speed; the
pictures committed under docs/ went through this to stay small."""
import struct
import sys
import zlib

for path in sys.argv[1:]:
    b = open(path, "rb").read()
    assert b[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    i, chunks = 8, []
    while i < len(b):
        (n,) = struct.unpack(">I", b[i : i + 4])
        chunks.append((b[i + 4 : i + 8], b[i + 8 : i + 8 + n]))
        i += 12 + n
    data = zlib.compress(zlib.decompress(b"".join(d for t, d in chunks if t == b"IDAT")), 9)
    out, wrote_idat = [b[:8]], False
    for t, d in chunks:
        if t == b"IDAT":
            if wrote_idat:
                continue
            t, d, wrote_idat = b"IDAT", data, True
        out.append(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF))
    open(path, "wb").write(b"".join(out))
    print(f"{path}: {len(b)} -> {sum(map(len, out))} bytes")
