"""What the console's overview shows: throughput, outcomes, latency and lags.

All of it comes from the read models (the saga read model, dead letters) and the
lag measurements the API already keeps for backpressure: one query set per page
render, never a Temporal query per viewer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg.rows import dict_row

from application.context import Context

WINDOW_MINUTES = 30
"""How far back the per-minute series go."""

SETTLED = ("awaiting_shipment", "shipped", "delivered", "completed", "compensated")
"""Statuses where a saga has settled: its forward steps done, or compensated."""


@dataclass
class Overview:
    """The overview page's figures; series are per minute, oldest first."""

    orders_per_minute: list[int]
    sagas_per_minute: list[int]
    settled_p50_ms_per_minute: list[float]
    outcomes: dict[str, int]
    settled_p50_ms: float | None
    settled_p99_ms: float | None
    open_dead_letters: int
    parked_steps: int
    lags: dict[str, float] = field(default_factory=dict)


_SERIES = """
WITH minutes AS (
  SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => %(window)s - 1),
                         date_trunc('minute', now()), interval '1 minute') AS minute
)
SELECT m.minute,
       count(s.saga_id) FILTER (WHERE s.saga_type = 'OrderSaga') AS orders,
       count(s.saga_id) AS sagas
FROM minutes m
LEFT JOIN saga_outcomes s ON date_trunc('minute', s.started_at) = m.minute
GROUP BY m.minute ORDER BY m.minute
"""

_LATENCY_SERIES = """
WITH minutes AS (
  SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => %(window)s - 1),
                         date_trunc('minute', now()), interval '1 minute') AS minute
)
SELECT m.minute,
       coalesce(percentile_cont(0.5) WITHIN GROUP (
         ORDER BY extract(epoch FROM s.updated_at - s.started_at) * 1000), 0) AS p50
FROM minutes m
LEFT JOIN saga_outcomes s ON date_trunc('minute', s.started_at) = m.minute
  AND s.status = ANY(%(settled)s)
GROUP BY m.minute ORDER BY m.minute
"""

# Why updated_at - started_at only for sagas that settled in the window: updated_at
# moves again when an order ships or is delivered, hours later; the window keeps
# those out of the latency figure.
_LATENCY = """
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
FROM (SELECT extract(epoch FROM updated_at - started_at) * 1000 AS ms
      FROM saga_outcomes
      WHERE status = ANY(%(settled)s)
        AND started_at > now() - make_interval(mins => %(window)s)) t
"""

_COUNTS = """
SELECT
  count(*) FILTER (WHERE status IN ('awaiting_shipment', 'shipped', 'delivered', 'completed'))
    AS completed,
  count(*) FILTER (WHERE status = 'compensated') AS compensated,
  count(*) FILTER (WHERE status = 'compensation_parked') AS parked,
  count(*) FILTER (WHERE status IN ('running', 'compensating')) AS running,
  (SELECT coalesce(sum(jsonb_array_length(parked)), 0) FROM saga_outcomes
    WHERE status = 'compensation_parked') AS parked_steps,
  (SELECT count(*) FROM dead_letters WHERE status = 'open') AS dead_letters
FROM saga_outcomes
"""


async def overview(ctx: Context, lags: dict[str, float]) -> Overview:
    """The figures of the overview page (``lags`` from the API's backpressure)."""
    params: dict[str, Any] = {"window": WINDOW_MINUTES, "settled": list(SETTLED)}
    async with ctx.pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_SERIES, params)
        series = await cur.fetchall()
        await cur.execute(_LATENCY_SERIES, params)
        latency_series = await cur.fetchall()
        await cur.execute(_LATENCY, params)
        latency = await cur.fetchone() or {}
        await cur.execute(_COUNTS)
        counts = await cur.fetchone() or {}
    return Overview(
        orders_per_minute=[int(r["orders"]) for r in series],
        sagas_per_minute=[int(r["sagas"]) for r in series],
        settled_p50_ms_per_minute=[float(r["p50"]) for r in latency_series],
        outcomes={
            k: int(counts.get(k) or 0) for k in ("completed", "compensated", "parked", "running")
        },
        settled_p50_ms=_float(latency.get("p50")),
        settled_p99_ms=_float(latency.get("p99")),
        open_dead_letters=int(counts.get("dead_letters") or 0),
        parked_steps=int(counts.get("parked_steps") or 0),
        lags=lags,
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
