"""Progress on standard error for commands that read many messages (issue 25: ``train``
read 4,191 messages for 5.8 s before it said anything; ``test`` and ``classify`` said
nothing until the end). tqdm (a well-kept library: rate, count, time left, one line) draws
it, only when asked or when standard error is a terminal, so pipes and logs stay clean."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

__all__ = ["shown", "counted"]

T = TypeVar("T")


def shown(flag: bool | None) -> bool:
    """``--progress``/``--no-progress`` as given, else whether stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else bool(flag)


def counted(items: Iterable[T], what: str, enabled: bool, total: int | None = None
            ) -> Iterator[T]:
    """``items``, with a progress line on stderr while they are consumed (``enabled``)."""
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    if total is None and isinstance(items, Sized):
        total = len(items)
    with tqdm(items, desc=what, total=total, unit=" msg", file=sys.stderr,
              mininterval=0.5, dynamic_ncols=True) as bar:
        yield from bar
