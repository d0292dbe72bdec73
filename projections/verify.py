"""Compare read models row for row: live tables against a rebuild from the store.

Used by the crash tests and by operators (``verify_against_rebuild``) after an
incident: a read model is right exactly when it equals its rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from eventstore.postgres import PostgresEventStore
from projections.handlers import Projection
from projections.rebuild import rebuild

Dump = dict[str, list[tuple[Any, ...]]]


async def dump_read_models(pool: AsyncConnectionPool, projections: Sequence[Projection]) -> Dump:
    """Every row of every table of ``projections``, sorted, keyed by table name."""
    dump: Dump = {}
    async with pool.connection() as conn:
        for projection in projections:
            for table in projection.tables:
                cur = await conn.execute(
                    sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(sql.Identifier(table))
                )
                dump[table] = [tuple(row) for row in await cur.fetchall()]
    return dump


async def verify_against_rebuild(
    store: PostgresEventStore, projections: Sequence[Projection]
) -> tuple[Dump, Dump]:
    """(live, rebuilt) dumps: the live tables, then each model rebuilt and swapped in."""
    live = await dump_read_models(store.pool, projections)
    for projection in projections:
        await rebuild(store, projection)
    return live, await dump_read_models(store.pool, projections)
