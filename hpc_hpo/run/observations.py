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

import bisect
import io
import pickle
from operator import itemgetter

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
    """Every observation in order, each pickled once; the part after any position as one blob.

    It also keeps the positions of the ``best`` lowest scores (``append``'s ``score``: the value to
    minimise, None for a failed trial), so that a task that cannot carry everything it has not seen
    still carries the best of it (:meth:`since`'s ``limit``).
    """

    def __init__(self, best: int = 0):
        self._pickles: list[bytes] = []
        self._blocks: list[bytes] = []  # _pickles[i * BLOCK:(i + 1) * BLOCK], joined
        self._keep = best
        self._best: list[tuple[float, int]] = []  # (score, position), sorted, at most ``best``
        self._positions: list[int] | None = None  # their positions in order (made again when they change)

    def __len__(self) -> int:
        return len(self._pickles)

    def append(self, observation: tuple, score: float | None = None) -> None:
        position = len(self._pickles)
        self._pickles.append(pickled(observation))
        if len(self._pickles) % BLOCK == 0:
            self._blocks.append(b"".join(self._pickles[-BLOCK:]))
        if (self._keep and score is not None and score == score  # not NaN
                and (len(self._best) < self._keep or score < self._best[-1][0])):
            bisect.insort(self._best, (score, position))
            del self._best[self._keep:]
            self._positions = None

    def since(self, seen: int, limit: int | None = None) -> Packed:
        """The observations from position ``seen`` on; with ``limit``, at most that many: the last ones, and
        before them the best ones (of those kept) among the ones left out."""
        end = len(self._pickles)
        if limit is not None and end - seen > limit:
            half = limit // 2  # the last half always goes; the best of the rest in the other half
            by_position = self._best_positions()
            best = by_position[bisect.bisect_left(by_position, seen):bisect.bisect_left(by_position, end - (limit - half))]
            if len(best) > half:  # more of the best left out than room for them: the best of those
                ranked = [p for _, p in self._best if seen <= p < end - (limit - half)]
                best = sorted(ranked[:half])
            start = end - (limit - len(best))
            best = best[:bisect.bisect_left(best, start)]  # one the last ones carry anyway goes once
            chosen = list(itemgetter(*best)(self._pickles)) if len(best) > 1 else [self._pickles[p] for p in best]
            return Packed(b"".join(chosen + self._parts(start, end)), len(best) + end - start)
        return Packed(b"".join(self._parts(seen, end)), end - seen)

    def _best_positions(self) -> list[int]:
        """The positions of the kept best, in order of position (made again when they change)."""
        if self._positions is None:
            self._positions = sorted(p for _, p in self._best)
        return self._positions

    def _parts(self, seen: int, end: int) -> list[bytes]:
        """The byte strings that joined make the pickles of positions ``seen`` to ``end``: whole blocks between."""
        first_block = -(-seen // BLOCK)  # the first whole block at or after seen
        last_block = end // BLOCK
        if first_block >= last_block:
            return self._pickles[seen:end]
        return [*self._pickles[seen:first_block * BLOCK], *self._blocks[first_block:last_block],
                *self._pickles[last_block * BLOCK:end]]


def pickled(item) -> bytes:
    """``item`` as :class:`Packed` keeps it."""
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
