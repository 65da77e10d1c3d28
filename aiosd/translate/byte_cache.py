"""A small least-recently-used cache bounded by the bytes of what it holds, not only by its entries."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteBoundedCache(Generic[K, V]):
    """At most ``max_entries`` values and ``max_bytes`` in all (sizes as the caller measures them);
    a value over ``max_entry_bytes`` is never kept. The least recently used entries go first."""

    def __init__(self, *, max_entries: int, max_bytes: int, max_entry_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self._entries: dict[K, tuple[V, int]] = {}
        self.size = 0  # bytes held, as measured by put()'s callers

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._entries[key] = entry  # now the most recently used
        return entry[0]

    def put(self, key: K, value: V, size: int) -> bool:
        """Keep ``value`` under ``key`` (evicting the oldest to make room); False if it is too large."""
        if size > self.max_entry_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= old[1]
        while self._entries and (len(self._entries) >= self.max_entries or self.size + size > self.max_bytes):
            _, (_, dropped) = self._pop_oldest()
            self.size -= dropped
        self._entries[key] = (value, size)
        self.size += size
        return True

    def _pop_oldest(self) -> tuple[K, tuple[V, int]]:
        oldest = next(iter(self._entries))
        return oldest, self._entries.pop(oldest)

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0
