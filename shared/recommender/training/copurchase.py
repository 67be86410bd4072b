"""Whether a training has anything to learn: co-purchases in the rows of its matrix (baskets, and returning
customers' histories). None at all stops the training (a model could only echo popularity, and it would replace
the served one); a thin signal trains with a warning giving the figures. Plain numpy over CSR arrays, so any trainer
can call it before its heavy stages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from recommender.core.errors import DataFileError

# Warn when fewer than this share of the items were ever bought together with another one.
THIN_SHARE = 0.5


@dataclass(frozen=True)
class Signal:
    """How much co-purchase a training matrix holds."""

    rows: int  # baskets + returning customers' histories
    rows_with_two: int  # rows holding two or more distinct items: the only ones that say what goes together
    items: int
    items_together: int  # items in at least one such row

    @property
    def thin(self) -> bool:
        """Most items were never bought with another one."""
        return self.items_together < THIN_SHARE * self.items

    def as_dict(self) -> dict:
        """For the manifest."""
        return asdict(self)


def measure(indptr: np.ndarray, indices: np.ndarray, n_items: int) -> Signal:
    """The signal of a binary rows x items matrix given as CSR arrays (indptr, indices)."""
    lengths = np.diff(indptr)
    multi = lengths >= 2
    together = np.zeros(n_items, dtype=bool)
    together[indices[np.repeat(multi, lengths)]] = True
    return Signal(len(lengths), int(multi.sum()), n_items, int(together.sum()))


def check(signal: Signal, baskets: int, progress: Callable[[str], None] = print) -> None:
    """DataFileError when nothing was bought together; a warning with the figures when the signal is thin."""
    if not signal.rows_with_two:
        raise DataFileError(
            f"no co-purchase signal: none of the {baskets:,} baskets to learn from holds two distinct products and "
            f"no returning customer bought two different ones, so a model could only repeat the most popular "
            f"items; nothing was trained and the active model stays"
        )
    if signal.thin:
        progress(
            f"warning: thin co-purchase signal: only {signal.items_together:,} of {signal.items:,} items "
            f"({signal.items_together / signal.items:.0%}) were ever bought with another one, in "
            f"{signal.rows_with_two:,} of {signal.rows:,} baskets and customer histories "
            f"({signal.rows_with_two / signal.rows:.0%}); the others get popular items instead"
        )
