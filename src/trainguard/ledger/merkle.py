"""RFC 6962 / RFC 9162 Merkle tree over packed 32-byte leaf hashes.

node = SHA-256(0x01 || left || right); the empty tree's root is SHA-256("").
Built level by level, promoting a lone right-most node unchanged, which gives
the same root as the RFC's recursive split at the largest power of two.
"""

from __future__ import annotations

import hashlib

NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def _next_level(level: bytes | bytearray | memoryview) -> bytes:
    """One level up, over packed 32-byte nodes (no Python object kept per node)."""
    h1 = hashlib.sha256(NODE_PREFIX)
    mv = memoryview(level)
    n = len(level) // 32
    out = []
    append = out.append
    for i in range(0, (n - n % 2) * 32, 64):
        c = h1.copy()
        c.update(mv[i:i + 64])
        append(c.digest())
    if n % 2:
        append(bytes(mv[-32:]))
    return b"".join(out)


def root(leaves: bytes | bytearray | memoryview) -> bytes:
    """Merkle tree head of packed leaves (32 bytes each)."""
    if len(leaves) % 32:
        raise ValueError(f"{len(leaves)} bytes is not a whole number of 32-byte leaves")
    if not leaves:
        return EMPTY_ROOT
    level = leaves
    while len(level) > 32:
        level = _next_level(level)
    return bytes(level)


BLOCK_LEAVES = 1 << 16


def block_roots_root(block_roots: list[bytes]) -> bytes:
    """Root from the roots of consecutive aligned blocks of BLOCK_LEAVES leaves (last may be short).

    Aligned power-of-two blocks are subtrees of the level-by-level tree, so the
    blocks can be hashed in parallel and combined here.
    """
    return root(b"".join(block_roots))


class StreamingRoot:
    """The root of leaves fed in any pieces, holding one block of leaves plus one root per block.

    Aligned blocks of `block_leaves` (a power of two) are complete subtrees, so each full block
    is reduced to its root as soon as it fills; 10^7 leaves keep ~153 roots, not 10^7 objects.
    """

    def __init__(self, block_leaves: int = BLOCK_LEAVES) -> None:
        if block_leaves < 1 or block_leaves & (block_leaves - 1):
            raise ValueError(f"block_leaves must be a power of two, not {block_leaves}")
        self._step = block_leaves * 32
        self._buf = bytearray()
        self._roots: list[bytes] = []
        self.count = 0

    def add(self, leaves: bytes) -> None:
        if len(leaves) % 32:
            raise ValueError(f"{len(leaves)} bytes is not a whole number of 32-byte leaves")
        self.count += len(leaves) // 32
        self._buf += leaves
        while len(self._buf) >= self._step:
            self._roots.append(root(self._buf[:self._step]))
            del self._buf[:self._step]

    def root(self) -> bytes:
        tail = [root(self._buf)] if self._buf else []
        return block_roots_root(self._roots + tail)


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _largest_pow2_below(n: int) -> int:
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def inclusion_proof(leaves: bytes, index: int) -> list[bytes]:
    """Audit path for leaf `index` (RFC 6962 PATH), leaf-level sibling first."""
    mv = memoryview(leaves)
    n = len(leaves) // 32
    if not 0 <= index < n:
        raise IndexError(f"row {index} is outside a tree of {n} leaves")
    path: list[bytes] = []
    lo, hi, m = 0, n, index
    while hi - lo > 1:
        k = _largest_pow2_below(hi - lo)
        if m < k:
            path.append(root(mv[(lo + k) * 32:hi * 32]))
            hi = lo + k
        else:
            path.append(root(mv[lo * 32:(lo + k) * 32]))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], expected_root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2 verification of an inclusion proof."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root
