"""RCPT grants on PostgreSQL: a token-bucket row (what PgLimiter does) against a log.

Starts a throwaway PostgreSQL (mailvet.testing.postgres), migrates it, then for 1 and
for 4 concurrent clients (each its own connection) grants RCPT tokens as fast as it
can for a few seconds with a rate cap high enough never to refuse, on one lane:

- bucket: ``PgLimiter.rcpt`` (one autocommit ``UPDATE mx_lanes ... RETURNING``);
- log: the alternative, a row per RCPT in a log table and a count of the last second,
  serialised by the lane row's lock (BEGIN; SELECT ... FOR UPDATE; SELECT count(*);
  INSERT; COMMIT), old rows deleted as it goes.

Prints grants a second and mean milliseconds per grant for each.

Usage: .venv/bin/python bench/limits_pg.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import psycopg

from mailvet.jobs.limits import LaneLimits
from mailvet.jobs.limits_pg import PgLimiter, pg_conninfo
from mailvet.settings import Settings
from mailvet.storage import open_store
from mailvet.testing.postgres import postgres_server

LIMITS = LaneLimits(
    max_sessions=4, rcpt_per_session=50, rcpt_per_second=1e9, connects_per_minute=30
)
LOG_TABLE = "CREATE TABLE IF NOT EXISTS bench_rcpt_log (lane text NOT NULL, at timestamptz)"


async def bucket(url: str, clients: int, seconds: float) -> int:
    settings = Settings()
    limiters = [
        PgLimiter(url, holder=f"bench-{i}", settings=settings, pool_size=1) for i in range(clients)
    ]
    for limiter in limiters:
        await limiter.start()
    end = time.perf_counter() + seconds

    async def run(limiter: PgLimiter) -> int:
        n = 0
        while time.perf_counter() < end:
            await limiter.rcpt("mx.bench", LIMITS)
            n += 1
        return n

    try:
        return sum(await asyncio.gather(*(run(limiter) for limiter in limiters)))
    finally:
        for limiter in limiters:
            await limiter.close()


async def log_table(url: str, clients: int, seconds: float) -> int:
    conninfo = pg_conninfo(url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(LOG_TABLE)
        await conn.execute(
            "CREATE INDEX IF NOT EXISTS bench_rcpt_log_ix ON bench_rcpt_log (lane, at)"
        )
        await conn.execute("INSERT INTO mx_lanes (lane) VALUES ('mx.bench') ON CONFLICT DO NOTHING")
    end = time.perf_counter() + seconds

    async def run() -> int:
        n = 0
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            while time.perf_counter() < end:
                async with conn.transaction():
                    await conn.execute("SELECT 1 FROM mx_lanes WHERE lane = 'mx.bench' FOR UPDATE")
                    await conn.execute(
                        "SELECT count(*) FROM bench_rcpt_log WHERE lane = 'mx.bench' "
                        "AND at > clock_timestamp() - interval '1 second'"
                    )
                    await conn.execute(
                        "INSERT INTO bench_rcpt_log VALUES ('mx.bench', clock_timestamp())"
                    )
                    if n % 100 == 0:
                        await conn.execute(
                            "DELETE FROM bench_rcpt_log WHERE lane = 'mx.bench' "
                            "AND at < clock_timestamp() - interval '1 second'"
                        )
                n += 1
        return n

    return sum(await asyncio.gather(*(run() for _ in range(clients))))


async def main(seconds: float) -> None:
    with postgres_server() as server:
        store = open_store(server.url)
        await store.migrate()
        await store.close()
        for clients in (1, 4):
            for name, run in (("bucket", bucket), ("log", log_table)):
                grants = await run(server.url, clients, seconds)
                rate = grants / seconds
                print(
                    f"{name:<6} clients={clients}: {rate:8.0f} grants/s, "
                    f"{1000 * clients / rate:.2f} ms per grant per client"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(main(parser.parse_args().seconds))
