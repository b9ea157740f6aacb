"""Running one coroutine per item, a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def each_at_most(
    limit: int, items: Iterable[T], run: Callable[[T], Awaitable[Any]], *, return_exceptions: bool = False
) -> list[Any]:
    """``run(item)`` for every item, at most ``limit`` at once; the results in the items' order.

    For work that is mostly waiting on other processes (monitors, hosts):
    overlapped, so it does not take the sum of the waits, and bounded, so a
    thousand items do not all press on the host at the same moment.
    ``return_exceptions`` as for :func:`asyncio.gather`.
    """
    gate = asyncio.Semaphore(limit)

    async def gated(item: T) -> Any:
        async with gate:
            return await run(item)

    return await asyncio.gather(*(gated(item) for item in items), return_exceptions=return_exceptions)
