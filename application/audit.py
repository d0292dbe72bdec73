"""The operator audit trail: who did what from the console, on what, and the result.

Saga decisions are also journalled on the saga's stream (with the operator); dead
letters have no journal, so this trail is the one place that names who replayed or
skipped one.
"""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row

from application.context import Context


async def record(
    ctx: Context, principal: str, action: str, target: str, *, note: str = "", result: str = ""
) -> None:
    """Append one action to the trail."""
    async with ctx.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO operator_actions (principal, action, target, note, result) "
            "VALUES (%s, %s, %s, %s, %s)",
            (principal, action, target, note, result),
        )


async def recent(ctx: Context, limit: int = 50) -> list[dict[str, Any]]:
    """The newest actions first."""
    async with ctx.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            "SELECT id, at, principal, action, target, note, result FROM operator_actions "
            "ORDER BY at DESC, id DESC LIMIT %s",
            (limit,),
        )
        return await cur.fetchall()
