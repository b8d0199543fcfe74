# Independent MurmurHash3 x86_32 in Python, to hand-check the Rust golden values.
def rotl(x, r): return ((x << r) | (x >> (32 - r))) & 0xffffffff
def mm3(data, seed=0):
    c1, c2 = 0xcc9e2d51, 0x1b873593
    h = seed; n = len(data); nb = n // 4
    for i in range(nb):
        k = int.from_bytes(data[4*i:4*i+4], 'little')
        k = (k * c1) & 0xffffffff; k = rotl(k, 15); k = (k * c2) & 0xffffffff
        h ^= k; h = rotl(h, 13); h = (h * 5 + 0xe6546b64) & 0xffffffff
    tail = data[4*nb:]; k = 0
    for i, b in enumerate(tail): k |= b << (8*i)
    if tail:
        k = (k * c1) & 0xffffffff; k = rotl(k, 15); k = (k * c2) & 0xffffffff; h ^= k
    h ^= n; h ^= h >> 16; h = (h * 0x85ebca6b) & 0xffffffff; h ^= h >> 13; h = (h * 0xc2b2ae35) & 0xffffffff; h ^= h >> 16
    return h
assert mm3(b"hello") == 0x248bfa47 and mm3(b"The quick brown fox jumps over the lazy dog") == 0x2e4ff723, "vectors"
print("test", hex(mm3(b"test")), "seed1", hex(mm3(b"", 1)))
def feat(text, bits, ng):
    hs = [mm3(t.encode()) for t in text.split()]
    c = [0] * (1 << bits); m = (1 << bits) - 1
    for i in range(len(hs)):
        h = 0
        for L in range(min(ng, len(hs) - i)):
            h = hs[i] if L == 0 else (h * 27942141 + hs[i + L]) & 0xffffffff
            c[h & m] += 1
    return c
for t, b, n in [("This is a good day", 3, 2), ("This is a good day", 3, 1), ("hello world", 2, 2), ("The quick brown fox", 4, 2)]:
    print(t, b, n, feat(t, b, n))
