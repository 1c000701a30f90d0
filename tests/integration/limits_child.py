"""A worker process for tests/integration/test_limits_pg.py: one PgLimiter in its own process.

``python -m tests.integration.limits_child '<json>'`` with
``{"mode": "hammer" | "hold", "url", "lane", "limits": {...}, "lease_seconds",
"go", "seconds", "tasks"}``:

- ``hammer``: from wall time ``go`` for ``seconds``, ``tasks`` tasks take sessions on the
  lane and, inside, RCPT groups; prints one JSON line ``{"sessions": [[enter, exit]...],
  "rcpts": [[time, count]...]}`` (``time.time()``: the same clock in every process);
- ``hold``: takes one session, prints ``held``, and sleeps until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from mailvet.jobs.limits import LaneLimits
from mailvet.jobs.limits_pg import PgLimiter, default_holder
from mailvet.settings import Settings

GROUP = 5  # RCPTs asked in one rcpt() call (a pipelined group)


async def hammer(
    limiter: PgLimiter, lane: str, limits: LaneLimits, go: float, seconds: float, tasks: int
) -> dict[str, list[list[float]]]:
    sessions: list[list[float]] = []
    rcpts: list[list[float]] = []
    await asyncio.sleep(max(0.0, go - time.time()))
    end = go + seconds

    async def run() -> None:
        while time.time() < end:
            async with limiter.session(lane, limits):
                entered = time.time()
                for _ in range(2):
                    await limiter.rcpt(lane, limits, GROUP)
                    rcpts.append([time.time(), GROUP])
                await asyncio.sleep(0.02)
                sessions.append([entered, time.time()])

    await asyncio.gather(*(run() for _ in range(tasks)))
    return {"sessions": sessions, "rcpts": rcpts}


async def main(spec: dict[str, Any]) -> None:
    settings = Settings(mx_lease_seconds=spec.get("lease_seconds", 30.0))
    limits = LaneLimits(**spec["limits"])
    async with PgLimiter(spec["url"], holder=default_holder(), settings=settings) as limiter:
        if spec["mode"] == "hold":
            async with limiter.session(spec["lane"], limits):
                print("held", flush=True)
                await asyncio.sleep(3600)
            return
        out = await hammer(
            limiter, spec["lane"], limits, spec["go"], spec["seconds"], spec["tasks"]
        )
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
