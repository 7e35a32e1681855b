"""Name, ggml type and SHA-256 of the bytes of every tensor of a GGUF v3 file (no gguf-py needed)."""
import hashlib, struct

# ggml type id → (values per block, bytes per block)
BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
          10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 20: (32, 18),
          23: (256, 136), 30: (1, 2)}

def gguf_tensors(path):
    """(name, ggml type id, sha256 of the bytes) of every tensor of a GGUF v3 file."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"GGUF"
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    off = 24
    def string(o):
        n, = struct.unpack_from("<Q", data, o)
        return data[o + 8:o + 8 + n].decode(), o + 8 + n
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def value(t, o):
        if t == 8:
            return string(o)
        if t == 9:
            et, n = struct.unpack_from("<IQ", data, o)
            o += 12
            v = []
            for _ in range(n):
                x, o = value(et, o)
                v.append(x)
            return v, o
        fmt = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}[t]
        return struct.unpack_from("<" + fmt, data, o)[0], o + sizes[t]
    align = 32
    for _ in range(n_kv):
        k, off = string(off)
        t, = struct.unpack_from("<I", data, off)
        v, off = value(t, off + 4)
        if k == "general.alignment":
            align = v
    infos = []
    for _ in range(n_tensors):
        name, off = string(off)
        nd, = struct.unpack_from("<I", data, off)
        dims = struct.unpack_from(f"<{nd}Q", data, off + 4)
        ty, toff = struct.unpack_from("<IQ", data, off + 4 + 8 * nd)
        off += 4 + 8 * nd + 12
        n = 1
        for d in dims:
            n *= d
        infos.append((name, ty, toff, n))
    base = (off + align - 1) // align * align
    out = {}
    for name, ty, toff, n in infos:
        bs, ts = BLOCKS[ty]
        size = n // bs * ts
        out[name] = {"type": ty, "sha256": hashlib.sha256(data[base + toff:base + toff + size]).hexdigest()}
    return out

