"""What Bayesian tasks carry, pickled once per item on the master.

Each Bayesian task carries the observations its worker has not seen yet (with thousands of
workers, about one per other worker) and the points pending elsewhere. Pickling them anew for
every task would make the master's work per result grow with the number of workers; instead
each observation and each pending point is pickled once, when the master learns it, and a task
joins byte strings: :class:`ObservationLog` keeps the observations also joined in blocks of
``BLOCK``, so a task's unseen part is a join of a few strings (:meth:`ObservationLog.since`).
Both travel as :class:`Packed`, which pickles as its bytes and unpickles on the worker into the
same items the master recorded.
"""

from __future__ import annotations

import io
import pickle

#: Observations per joined block.
BLOCK = 64


class Packed:
    """Items as one byte string of consecutive pickles; a sequence of the items once read."""

    @classmethod
    def of(cls, pickles: list[bytes]) -> Packed:
        """The items whose pickles these are, in this order."""
        return cls(b"".join(pickles), len(pickles))

    __slots__ = ("blob", "count", "_items")

    def __init__(self, blob: bytes, count: int):
        self.blob = blob
        self.count = count
        self._items: list | None = None

    def items(self) -> list:
        if self._items is None:
            stream = io.BytesIO(self.blob)
            self._items = [pickle.load(stream) for _ in range(self.count)]
        return self._items

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return iter(self.items())

    def __getitem__(self, index):
        return self.items()[index]

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, (Packed, list, tuple)) else NotImplemented

    def __repr__(self) -> str:
        return f"Packed({self.count} items, {len(self.blob)} bytes)"

    def __reduce__(self):
        return Packed, (self.blob, self.count)


class ObservationLog:
    """Every observation in order, each pickled once; the part after any position as one blob."""

    def __init__(self):
        self._pickles: list[bytes] = []
        self._blocks: list[bytes] = []  # _pickles[i * BLOCK:(i + 1) * BLOCK], joined

    def __len__(self) -> int:
        return len(self._pickles)

    def append(self, observation: tuple) -> None:
        self._pickles.append(pickled(observation))
        if len(self._pickles) % BLOCK == 0:
            self._blocks.append(b"".join(self._pickles[-BLOCK:]))

    def since(self, seen: int) -> Packed:
        """The observations from position ``seen`` on."""
        end = len(self._pickles)
        first_block = -(-seen // BLOCK)  # the first whole block at or after seen
        last_block = end // BLOCK
        if first_block >= last_block:
            parts = self._pickles[seen:end]
        else:
            parts = [*self._pickles[seen:first_block * BLOCK], *self._blocks[first_block:last_block],
                     *self._pickles[last_block * BLOCK:end]]
        return Packed(b"".join(parts), end - seen)


def pickled(item) -> bytes:
    """``item`` as :class:`Packed` keeps it."""
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
