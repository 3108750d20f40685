"""`subscribers import`: `KeyFilter`, the addresses this run added (kept by whichever
process reads the file; free of SQLAlchemy, so that the reader process stays small)."""

from __future__ import annotations

from collections.abc import Iterable


class KeyFilter:
    """The addresses this run added, by hash: a set of hashes (exact), or a bit set.

    The bit set has at least 16 bits for each of the `rows` expected (at most 2**27 bits,
    16 MB), so it answers "maybe" for at most about 1 in 16 unknown keys; a "maybe" only
    costs a database lookup (500 in one query), which gives the truth. It is used for a
    first import into an empty list, where every key found in the database was added by
    this run; dry runs and merges into a full list use the exact set.
    """

    BITS = 27
    MIN_BITS = 20
    BITS_PER_ROW = 16

    def __init__(self, exact: bool, rows: int = 1 << (BITS - 4), bits: int | None = None):
        """`bits`: the bit set's size as a power of two, instead of one sized for `rows`
        (the reader process makes the same filter as the process that planned it)."""
        self.exact: set[int] | None = set() if exact else None
        if bits is None:
            wanted = max(rows, 1) * self.BITS_PER_ROW
            bits = min(self.BITS, max(self.MIN_BITS, (wanted - 1).bit_length()))
        self.bits = bytearray(0 if exact else 1 << (bits - 3))
        self.mask = (1 << bits) - 1
        self.fixed = False
        self.seen: list[str] = []  # a fixed filter's keys (`of`)

    @classmethod
    def of(cls, keys: Iterable[str]) -> KeyFilter:
        """An exact filter holding these keys, and only these: `update` leaves it alone
        (one chunk's keys seen before; hashing what the chunk adds would be wasted)."""
        found = cls(exact=True)
        found.seen = list(dict.fromkeys(keys))  # (in order, once each)
        found.update(found.seen)
        found.fixed = True
        return found

    def add(self, key: str) -> None:
        if self.exact is not None:
            self.exact.add(hash(key))
        else:
            h = hash(key) & self.mask
            self.bits[h >> 3] |= 1 << (h & 7)

    def update(self, keys: Iterable[str]) -> None:
        if self.fixed:
            return
        if self.exact is not None:
            self.exact.update(map(hash, keys))
            return
        bits, mask = self.bits, self.mask
        for key in keys:
            h = hash(key) & mask
            bits[h >> 3] |= 1 << (h & 7)

    def among(self, keys: Iterable[str]) -> list[str]:
        """The keys that may be in the filter, in order (`key in self` for each, without a
        method call per key: a first big import asks for every one of a million)."""
        if self.fixed and isinstance(keys, dict):
            # A chunk's few keys seen before: those of them the chunk holds (in the order
            # they were seen), instead of asking for each of the chunk's ten thousand.
            return [key for key in self.seen if key in keys]
        if self.exact is not None:
            exact = self.exact
            return [key for key in keys if hash(key) in exact]
        bits, mask = self.bits, self.mask
        return [key for key in keys if bits[(h := hash(key) & mask) >> 3] & (1 << (h & 7))]

    def __contains__(self, key: str) -> bool:
        if self.exact is not None:
            return hash(key) in self.exact
        h = hash(key) & self.mask
        return bool(self.bits[h >> 3] & (1 << (h & 7)))
