"""The leader's periodic passes (status, quota, drains, host failures, re-balance)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


async def while_leading(
    period: Callable[[], float],
    leading: Callable[[], bool],
    work: Callable[[], Awaitable[Any]],
    what: str,
) -> None:
    """Run `work` every `period()` seconds while this replica leads. A failed pass is logged
    and the next one retries: one bad object or a flaky API server never stops the loop."""
    while True:
        await asyncio.sleep(period())
        if not leading():
            continue
        try:
            await work()
        except Exception:
            log.exception("%s failed; retrying next period", what)
