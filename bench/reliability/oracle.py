"""The invariants, computed from the event store (the source of truth) after a scenario.

Each check reads the store with plain SQL and compares it with what the rest of the
system shows: Kafka (every event there, read in full by a consumer without a group),
the read models (every event applied, live tables equal to a rebuild row for row),
Temporal (the saga status the API reports) and the aggregates themselves. A check
returns human-readable violations; an empty list means the invariant holds.

Scope: a scenario owns its customers (``customer_id`` prefix) and SKUs, so checks are
computed over the scenario's streams only, except the rebuild comparison, which is
global (a rebuild replaces the live tables, so each comparison starts clean).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from domain.inventory import Inventory
from eventstore.postgres import PostgresEventStore
from eventstore.repository import Repository
from projections.handlers import Projection, default_projections
from projections.verify import verify_against_rebuild
from sagaflow.clients import kafka_client_options
from sagaflow.settings import Settings, Transport
from streaming.kafka import topic_partitions

#: Store-side outcome of an order's saga -> the Temporal statuses that agree with it.
AGREEING_STATUS = {
    "completed": {"awaiting_shipment", "shipped", "delivered"},
    "compensated": {"compensated"},
    "parked": {"compensation_parked"},
}


@dataclass(frozen=True)
class StoredEvent:
    """The columns of ``events`` the oracle needs."""

    event_id: str
    stream_id: str
    stream_type: str
    version: int
    event_type: str
    data: dict[str, Any]


@dataclass
class OracleReport:
    """What the oracle found for one scenario."""

    #: orders of the scenario found in the store (accepted or not)
    orders: int = 0
    #: orders whose saga is terminal or waiting, per the store
    settled: int = 0
    #: events of the scenario's streams
    events: int = 0
    #: stored events missing from Kafka or from a read model that follows them
    lost: int = 0
    #: duplicate effects: rows differing from a rebuild, business facts recorded twice
    duplicated: int = 0
    #: Kafka messages beyond the first per event (at-least-once copies; not an effect)
    kafka_copies: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def terminal_pct(self) -> float:
        """Share of the scenario's orders that are terminal or waiting, in percent."""
        return round(100.0 * self.settled / self.orders, 2) if self.orders else 100.0


# --- reading ---------------------------------------------------------------------------


async def scenario_orders(
    store: PostgresEventStore, customer_prefix: str, skus: Sequence[str], accepted: Iterable[str]
) -> list[str]:
    """The scenario's order ids: those the API accepted, those created for its customers
    and those that reserved its SKUs.

    Why three sources: OrderCreated is written only after stock and payment (a
    declined order has none), and an order whose 202 was lost in a fault still ran.
    """
    like = customer_prefix.replace("%", r"\%").replace("_", r"\_") + "%"
    async with store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT data->>'order_id' FROM events WHERE event_type = 'OrderCreated' "
            "AND data->>'customer_id' LIKE %s "
            "UNION SELECT data->>'order_id' FROM events WHERE event_type = 'StockReserved' "
            "AND stream_id = ANY(%s)",
            (like, [f"inventory-{sku}" for sku in skus]),
        )
        found = {row[0] for row in await cur.fetchall()}
    return sorted(found | set(accepted))


async def scenario_events(
    store: PostgresEventStore, order_ids: Sequence[str], skus: Sequence[str]
) -> list[StoredEvent]:
    """Every event of the scenario's streams: its SKUs' inventory streams and every
    stream an order's saga wrote to (found by the correlation id, i.e. the order id)."""
    async with store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT stream_id FROM events WHERE metadata->>'correlation_id' = ANY(%s)"
            " OR stream_id = ANY(%s)",
            (list(order_ids), [f"order-{o}" for o in order_ids]),
        )
        streams = {row[0] for row in await cur.fetchall()}
        streams |= {f"inventory-{sku}" for sku in skus}
        cur = await conn.execute(
            "SELECT event_id::text, stream_id, stream_type, version, event_type, data "
            "FROM events WHERE stream_id = ANY(%s) ORDER BY stream_id, version",
            (sorted(streams),),
        )
        return [StoredEvent(*row) for row in await cur.fetchall()]


async def kafka_event_ids(
    settings: Settings, *, within_s: float = 120.0, idle_s: float = 2.0
) -> Counter[str]:
    """How many times each event id is on the topic, read from the first offset to the
    end offsets of this moment by a consumer without a group (no committed offsets)."""
    assert settings.kafka_bootstrap, "no Kafka bootstrap address"
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    seen: Counter[str] = Counter()
    await consumer.start()
    try:
        # Why ask the cluster: a consumer without subscriptions knows no topic's metadata.
        partitions = await topic_partitions(settings, settings.kafka_topic)
        tps = [TopicPartition(settings.kafka_topic, p) for p in sorted(partitions)]
        if not tps:
            return seen
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + within_s
        last_progress = time.monotonic()
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                break
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if batch:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > idle_s * 10:
                raise TimeoutError(f"Kafka read stalled at {positions} of {ends}")
            for records in batch.values():
                for record in records:
                    if record.value is None:
                        continue
                    seen[str(json.loads(record.value)["event_id"])] += 1
        else:
            raise TimeoutError(f"Kafka topic not read to its end within {within_s} s")
    finally:
        await consumer.stop()
    return seen


# --- checks ----------------------------------------------------------------------------


def order_outcomes(events: Iterable[StoredEvent]) -> dict[str, str]:
    """Per order id: completed, compensated, parked or stuck, from its saga stream."""
    outcome: dict[str, str] = {}
    parked: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.stream_type != "Saga":
            continue
        saga_id = e.stream_id.removeprefix("saga-")
        match e.event_type:
            case "SagaStarted":
                outcome.setdefault(saga_id, "stuck")
            case "SagaCompleted":
                if outcome.get(saga_id) != "compensated":
                    outcome[saga_id] = "completed"
            case "SagaCompensated":
                outcome[saga_id] = "compensated"
            case "CompensationParked":
                parked[saga_id].add(str(e.data.get("step")))
            case "CompensationResolved":
                parked[saga_id].discard(str(e.data.get("step")))
    for saga_id, steps in parked.items():
        if steps and outcome.get(saga_id) != "compensated":
            outcome[saga_id] = "parked"
    return outcome


def check_terminal(
    order_ids: Sequence[str], outcomes: Mapping[str, str], saga_status: Mapping[str, str]
) -> tuple[int, list[str]]:
    """Every order (accepted ones included) terminal or waiting in the store, agreeing
    with the status Temporal reports. Returns (settled, violations)."""
    violations: list[str] = []
    settled = 0
    for order_id in order_ids:
        outcome = outcomes.get(order_id, "no saga events")
        if outcome in AGREEING_STATUS:
            settled += 1
        else:
            violations.append(
                f"order {order_id}: saga {outcome} in the store "
                f"(Temporal via API: {saga_status.get(order_id, 'no answer')})"
            )
            continue
        status = saga_status.get(order_id)
        if status is not None and status not in AGREEING_STATUS[outcome]:
            violations.append(f"order {order_id}: store says {outcome}, Temporal says {status}")
    return settled, violations


def check_contiguous(events: Sequence[StoredEvent]) -> list[str]:
    """Each stream's versions are 1..n with no gap or repeat."""
    by_stream: dict[str, list[int]] = defaultdict(list)
    for e in events:
        by_stream[e.stream_id].append(e.version)
    return [
        f"stream {stream}: versions {versions[:5]}... not 1..{len(versions)}"
        for stream, versions in by_stream.items()
        if sorted(versions) != list(range(1, len(versions) + 1))
    ]


def check_kafka(events: Sequence[StoredEvent], on_topic: Counter[str]) -> tuple[int, int]:
    """(stored events not on the topic, extra copies of the scenario's events)."""
    missing = sum(1 for e in events if on_topic.get(e.event_id, 0) == 0)
    copies = sum(max(on_topic.get(e.event_id, 0) - 1, 0) for e in events)
    return missing, copies


async def check_applied(
    store: PostgresEventStore, events: Sequence[StoredEvent], projections: Sequence[Projection]
) -> tuple[int, list[str]]:
    """Every event applied by every read model that follows its stream type, per the
    model's watermark (the last version it applied of each stream)."""
    heads: dict[str, tuple[str, int]] = {}
    for e in events:
        if e.version > heads.get(e.stream_id, ("", 0))[1]:
            heads[e.stream_id] = (e.stream_type, e.version)
    async with store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT projection, stream_id, version FROM projection_watermarks "
            "WHERE stream_id = ANY(%s)",
            (list(heads),),
        )
        marks = {(p, s): v for p, s, v in await cur.fetchall()}
    lost = 0
    violations: list[str] = []
    for stream, (stream_type, head) in heads.items():
        for projection in projections:
            if stream_type not in projection.stream_types:
                continue
            applied = marks.get((projection.name, stream), 0)
            if applied < head:
                lost += head - applied
                violations.append(
                    f"{projection.name}: {stream} applied up to v{applied} of v{head}"
                )
    return lost, violations


def _orders(events: Sequence[StoredEvent]) -> dict[str, dict[str, Any]]:
    """Per order: its lines {sku: qty}, total, paid amount, cancelled, shipped."""
    orders: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.stream_type != "Order":
            continue
        order = orders.setdefault(
            e.stream_id.removeprefix("order-"),
            {"lines": Counter(), "total": 0, "paid": [], "cancelled": 0, "shipped": 0},
        )
        match e.event_type:
            case "OrderItemAdded":
                order["lines"][e.data["sku"]] += int(e.data["quantity"])
            case "OrderItemRemoved":
                order["lines"].pop(e.data["sku"], None)
            case "OrderSubmitted":
                order["total"] = int(e.data["total_cents"])
            case "PaymentReceived":
                order["paid"].append(int(e.data["amount_cents"]))
            case "OrderCancelled":
                order["cancelled"] += 1
            case "OrderShipped":
                order["shipped"] += 1
    return orders


def check_duplicate_facts(events: Sequence[StoredEvent]) -> tuple[int, list[str]]:
    """Business facts recorded twice: a second charge or payment, a reservation beyond
    the order's line, a release or sale of more than was reserved."""
    dups = 0
    violations: list[str] = []
    orders = _orders(events)
    charges = Counter(e.stream_id for e in events if e.event_type == "PaymentCharged")
    for stream, count in charges.items():
        if count > 1:
            dups += count - 1
            violations.append(f"{stream}: charged {count} times")
    for order_id, order in orders.items():
        for what in ("paid", "cancelled", "shipped"):
            count = len(order[what]) if what == "paid" else order[what]
            if count > 1:
                dups += count - 1
                violations.append(f"order {order_id}: {what} recorded {count} times")
    moved: Counter[tuple[str, str, str]] = Counter()
    times: Counter[tuple[str, str, str]] = Counter()
    for e in events:
        if e.event_type in ("StockReserved", "StockReservationReleased", "StockSold"):
            key = (e.event_type, str(e.data["order_id"]), e.stream_id.removeprefix("inventory-"))
            moved[key] += int(e.data["quantity"])
            times[key] += 1
    for (kind, order_id, sku), qty in list(moved.items()):
        if kind != "StockReserved":
            continue
        # One reservation per order line (its id derives from the order and the SKU).
        if times[(kind, order_id, sku)] > 1:
            dups += times[(kind, order_id, sku)] - 1
            violations.append(f"order {order_id}: {sku} reserved {times[(kind, order_id, sku)]}x")
        found = orders.get(order_id)
        line = found["lines"].get(sku, 0) if found else qty
        out = moved.get(("StockReservationReleased", order_id, sku), 0) + moved.get(
            ("StockSold", order_id, sku), 0
        )
        if qty > line:
            dups += 1
            violations.append(f"order {order_id}: {qty} of {sku} reserved for a line of {line}")
        if out > qty:
            dups += 1
            violations.append(f"order {order_id}: {out} of {sku} released/sold of {qty}")
    return dups, violations


def inventory_from_events(
    events: Sequence[StoredEvent],
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Per SKU: stocked, available, reserved, sold, folded event by event; violations
    when available or reserved ever goes negative (an oversell)."""
    levels: dict[str, dict[str, int]] = {}
    violations: list[str] = []
    for e in events:
        if e.stream_type != "Inventory":
            continue
        sku = e.stream_id.removeprefix("inventory-")
        lv = levels.setdefault(sku, {"stocked": 0, "available": 0, "reserved": 0, "sold": 0})
        qty = int(e.data.get("quantity", 0))
        match e.event_type:
            case "StockAdded":
                lv["stocked"] += qty
                lv["available"] += qty
            case "StockReserved":
                lv["available"] -= qty
                lv["reserved"] += qty
            case "StockReservationReleased":
                lv["reserved"] -= qty
                lv["available"] += qty
            case "StockSold":
                lv["reserved"] -= qty
                lv["sold"] += qty
        if lv["available"] < 0 or lv["reserved"] < 0:
            violations.append(f"{sku}: {lv} after v{e.version} {e.event_type}")
    return levels, violations


async def check_inventory(
    store: PostgresEventStore, events: Sequence[StoredEvent], skus: Sequence[str]
) -> list[str]:
    """Inventory conserved per SKU: in the store (fold and aggregate agree), in the
    inventory_levels read model (available + reserved + sold = stocked, same numbers),
    and per order (reserved units follow the saga's outcome)."""
    levels, violations = inventory_from_events(events)
    async with store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT sku, available, reserved, sold FROM inventory_levels WHERE sku = ANY(%s)",
            (list(skus),),
        )
        read_model = {row[0]: tuple(int(v) for v in row[1:]) for row in await cur.fetchall()}
    repo = Repository(store, Inventory)
    for sku in skus:
        lv = levels.get(sku)
        if lv is None:
            violations.append(f"{sku}: no inventory events")
            continue
        if lv["available"] + lv["reserved"] + lv["sold"] != lv["stocked"]:
            violations.append(f"{sku}: store not conserved {lv}")
        agg = await repo.load(sku)
        as_agg = (agg.stocked, agg.available, agg.reserved, agg.sold)
        if as_agg != (lv["stocked"], lv["available"], lv["reserved"], lv["sold"]):
            violations.append(f"{sku}: aggregate (snapshot path) {as_agg} != events {lv}")
        row = read_model.get(sku)
        wanted = (lv["available"], lv["reserved"], lv["sold"])
        if row != wanted:
            violations.append(f"{sku}: inventory_levels {row} != store {wanted}")
    violations += _reservations_follow_outcomes(events)
    return violations


def _reservations_follow_outcomes(events: Sequence[StoredEvent]) -> list[str]:
    """Stock still reserved per order: none once compensated or cancelled, all of its
    reserved units once completed and not shipped (then sold)."""
    outcomes = order_outcomes(events)
    orders = _orders(events)
    open_units: Counter[str] = Counter()
    sold_units: Counter[str] = Counter()
    for e in events:
        qty = int(e.data.get("quantity", 0))
        order_id = str(e.data.get("order_id", ""))
        match e.event_type:
            case "StockReserved":
                open_units[order_id] += qty
            case "StockReservationReleased":
                open_units[order_id] -= qty
            case "StockSold":
                open_units[order_id] -= qty
                sold_units[order_id] += qty
    violations = []
    for order_id, outcome in outcomes.items():
        order = orders.get(order_id)
        if order is None:
            continue
        units = sum(order["lines"].values())
        held = open_units.get(order_id, 0)
        if outcome == "compensated" and held != 0:
            violations.append(f"order {order_id}: compensated but {held} units still reserved")
        if outcome == "completed" and not order["cancelled"]:
            if order["shipped"] and sold_units.get(order_id, 0) != units:
                violations.append(f"order {order_id}: shipped, sold {sold_units[order_id]}/{units}")
            if not order["shipped"] and held != units:
                violations.append(f"order {order_id}: awaiting shipment, {held}/{units} reserved")
    return violations


def check_ledger(events: Sequence[StoredEvent]) -> list[str]:
    """charged - refunded = total of live (paid, not cancelled) orders, overall and per
    order, with every charge equal to its order's total."""
    orders = _orders(events)
    charged: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    for e in events:
        if e.stream_type != "Payment":
            continue
        order_id = e.stream_id.removeprefix("payment-")
        if e.event_type == "PaymentCharged":
            charged[order_id] += int(e.data["amount_cents"])
        elif e.event_type == "PaymentRefunded":
            refunded[order_id] += int(e.data["amount_cents"])
    violations: list[str] = []
    live_total = 0
    for order_id, order in orders.items():
        live = bool(order["paid"]) and not order["cancelled"]
        expected = order["total"] if live else 0
        live_total += expected
        net = charged[order_id] - refunded[order_id]
        if net != expected:
            violations.append(
                f"order {order_id}: charged {charged[order_id]} - refunded "
                f"{refunded[order_id]} != {expected} (paid={order['paid']}, "
                f"cancelled={order['cancelled']}, total={order['total']})"
            )
    net_all = sum(charged.values()) - sum(refunded.values())
    if net_all != live_total:
        violations.append(f"ledger: charged - refunded = {net_all} != live orders {live_total}")
    return violations


async def check_rebuild(store: PostgresEventStore) -> tuple[int, list[str]]:
    """Rows that differ between the live read models and a rebuild from the store."""
    live, rebuilt = await verify_against_rebuild(store, default_projections())
    differing = 0
    violations: list[str] = []
    for table in sorted(set(live) | set(rebuilt)):
        # Rows hold JSON columns (lists, dicts): compare their canonical JSON text.
        a = Counter(_row_key(row) for row in live.get(table, []))
        b = Counter(_row_key(row) for row in rebuilt.get(table, []))
        only_live, only_rebuilt = a - b, b - a
        n = max(sum(only_live.values()), sum(only_rebuilt.values()))
        if n:
            differing += n
            sample = next(iter(only_live or only_rebuilt))
            violations.append(f"{table}: {n} row(s) differ from the rebuild, e.g. {sample!r}")
    return differing, violations


def _row_key(row: Sequence[Any]) -> str:
    return json.dumps(list(row), default=str, sort_keys=True)


# --- all together ------------------------------------------------------------------------


async def wait_caught_up(
    store: PostgresEventStore, settings: Settings, *, within_s: float
) -> float | None:
    """Seconds until the relay and the projector have nothing pending; None on timeout.

    On RabbitMQ "nothing pending" also means every stream's watermark is at the
    store's head: the broker's count misses deliveries in flight, and a shard queue it
    cannot declare yet (just after a restart) counts 0 (``rabbitmq_restart`` once
    checked the read models 3 s after the broker came back, 413 events short).
    """
    from projections.runner import projector_lag, streams_behind

    started = time.monotonic()
    deadline = started + within_s
    while time.monotonic() < deadline:
        try:
            lag = await projector_lag(store, settings)
            if lag.events == 0 and (
                settings.transport_kind is not Transport.RABBITMQ
                or await streams_behind(store, settings) == 0
            ):
                return time.monotonic() - started
        except Exception:
            pass  # a service may still be restarting: poll again
        await asyncio.sleep(0.5)
    return None


async def run_oracle(
    store: PostgresEventStore,
    settings: Settings,
    *,
    customer_prefix: str,
    skus: Sequence[str],
    accepted: Iterable[str],
    saga_status: Mapping[str, str],
) -> OracleReport:
    """Every invariant for one scenario (call once the pipeline caught up)."""
    report = OracleReport()
    accepted = list(accepted)
    order_ids = await scenario_orders(store, customer_prefix, skus, accepted)
    events = await scenario_events(store, order_ids, skus)
    report.orders, report.events = len(order_ids), len(events)
    outcomes = order_outcomes(events)
    report.settled, violations = check_terminal(order_ids, outcomes, saga_status)
    violations += check_contiguous(events)
    missing = 0
    # Why Kafka only: a topic can be read again from its first offset; RabbitMQ's
    # queues hand each message to the projector once, and acknowledged means gone.
    # There, that every event reached the read models (below) is the whole check.
    if settings.kafka_mode:
        on_topic = await kafka_event_ids(settings)
        missing, report.kafka_copies = check_kafka(events, on_topic)
        if missing:
            violations.append(f"{missing} stored event(s) not in Kafka")
    unapplied, applied_violations = await check_applied(store, events, default_projections())
    violations += applied_violations[:20]
    report.lost = missing + unapplied
    dup_facts, dup_violations = check_duplicate_facts(events)
    differing, rebuild_violations = await check_rebuild(store)
    report.duplicated = dup_facts + differing
    violations += dup_violations + rebuild_violations
    violations += await check_inventory(store, events, skus)
    violations += check_ledger(events)
    report.violations = violations
    return report
