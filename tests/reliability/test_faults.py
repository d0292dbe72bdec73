"""Fault injection against the whole stack, quick sizes; the oracle checks the invariants.

The long version (at least 1,000 orders per scenario) is ``python -m bench.reliability``.
"""

from __future__ import annotations

import uuid

import pytest

from bench.reliability import scenarios as s
from bench.reliability.harness import (
    SETTLED,
    Harness,
    register_products,
    temporal_diagnosis,
)
from bench.reliability.scenarios import QUICK, ScenarioResult
from tests.e2e.conftest import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(240)]


def assert_targets(result: ScenarioResult) -> None:
    """0 lost, 0 duplicated, 0 violations, every saga settled within the bound."""
    why = "\n".join(result.diagnosis)
    assert result.orders > 0, result.notes
    assert result.violations == [], "\n".join([*result.violations[:30], why])
    assert (result.lost, result.duplicated) == (0, 0)
    assert result.terminal_pct == 100.0
    assert result.recovery_s is not None, why
    assert result.recovery_s <= QUICK.settle_s


async def test_sagas_finish_when_the_worker_is_killed_every_few_seconds(harness: Harness) -> None:
    result = await s.worker_kill(harness, QUICK)
    assert result.notes["worker_kills"] >= 3
    assert_targets(result)


async def test_a_worker_fleet_loses_nothing_when_one_worker_at_a_time_is_killed(
    harness: Harness,
) -> None:
    result = await s.worker_fleet_kill(harness, QUICK)
    assert result.notes["worker_kills"] >= 3
    assert result.notes["workers"] == s.FLEET_SIZE
    assert_targets(result)


async def test_a_projector_group_counts_nothing_twice_when_members_are_killed(
    harness: Harness,
) -> None:
    result = await s.projector_group_kill(harness, QUICK)
    # every member of the group was killed at least once
    assert set(result.notes["killed"]) == {"projector", "projector-2", "projector-3"}
    assert_targets(result)


async def test_events_left_out_by_the_relay_are_healed_from_the_store(harness: Harness) -> None:
    result = await s.version_gap(harness, QUICK)
    assert result.notes["left_out"] > 0, "no gap was made"
    assert result.notes["gaps_healed"] >= result.notes["left_out"]
    assert_targets(result)


async def test_nothing_is_lost_when_relay_and_projector_are_killed_mid_batch(
    harness: Harness,
) -> None:
    result = await s.relay_projector_kill(harness, QUICK)
    assert result.notes["kills"] >= 4
    assert_targets(result)


async def test_the_pipeline_recovers_after_a_kafka_restart(harness: Harness) -> None:
    assert_targets(await s.kafka_restart(harness, QUICK))


async def test_the_pipeline_recovers_after_a_rabbitmq_restart(rabbit_harness: Harness) -> None:
    result = await s.rabbitmq_restart(rabbit_harness, QUICK)
    assert result.notes["rabbitmq_down_s"] >= QUICK.outage_s
    assert_targets(result)


async def test_a_projector_group_on_rabbitmq_shares_the_shards_through_kills(
    rabbit_harness: Harness,
) -> None:
    result = await s.projector_group_kill(rabbit_harness, QUICK)
    assert set(result.notes["killed"]) == {"projector", "projector-2", "projector-3"}
    assert_targets(result)


async def test_nothing_is_lost_when_the_busiest_partition_s_leader_is_killed(
    cluster_harness: Harness,
) -> None:
    # About 35 s at quick size (plus 35 s to start its three-broker stack).
    result = await s.kafka_leader_kill(cluster_harness, QUICK)
    kills = result.notes["leader_kills"]
    assert len(kills) >= 2
    assert all(k["new_leader"] not in (k["node"], -1) for k in kills), result.violations
    assert_targets(result)


async def test_sagas_and_projections_recover_after_a_postgres_restart(harness: Harness) -> None:
    assert_targets(await s.postgres_restart(harness, QUICK))


async def test_sagas_resume_after_a_temporal_restart(harness: Harness) -> None:
    assert_targets(await s.temporal_restart(harness, QUICK))


async def test_an_activity_that_commits_then_fails_writes_nothing_twice(
    harness: Harness,
) -> None:
    result = await s.commit_then_fail(harness, QUICK)
    assert result.notes["fault_fired"] > 0, "the fault point never fired"
    assert_targets(result)


async def test_a_held_write_transaction_delays_the_feed_but_loses_nothing(
    harness: Harness,
) -> None:
    result = await s.held_transaction(harness, QUICK)
    assert result.notes["held_s"] > s.HORIZON_ALERT_BOUND_S
    assert_targets(result)


async def test_two_hundred_concurrent_posts_with_one_key_make_one_order(
    harness: Harness,
) -> None:
    result = await s.idempotency_storm(harness, QUICK)
    assert result.notes["storm_statuses"], "the storm sent nothing"
    assert_targets(result)


async def test_a_missed_target_comes_with_temporal_s_view_of_the_order(harness: Harness) -> None:
    sku = f"DIAG-{uuid.uuid4().hex[:6]}"
    async with harness.http() as http:
        await register_products(http, [sku], stock=5)
        placed = await http.post(
            "/orders", json={"customer_id": "diag-c", "lines": [{"sku": sku, "quantity": 1}]}
        )
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["order_id"]

        async def settled() -> bool:
            saga = await http.get(f"/orders/{order_id}/saga")
            return saga.status_code == 200 and saga.json()["status"] in SETTLED

        # Settled, so the worker has logged the confirmation notice naming it.
        await eventually(settled)
    lines = await temporal_diagnosis(harness, [f"order {order_id}: store says x", "no id here"])
    assert lines[0].startswith(f"temporal {order_id}: status "), lines
    assert "pending workflow task state" in lines[0]
    assert lines[1].startswith("  history (") and "WORKFLOW_TASK_COMPLETED" in lines[1], lines
    assert any(order_id in line for line in lines[2:]), "no worker.log line names the order"


async def test_a_standby_relay_takes_over_within_5_s_each_time_the_active_one_is_killed(
    harness: Harness,
) -> None:
    result = await s.relay_failover(harness, QUICK)
    assert result.notes["relay_kills"] >= 4
    assert len(result.notes["takeover_s"]) == result.notes["relay_kills"]
    assert result.notes["takeover_max_s"] <= s.TAKEOVER_BOUND_S
    assert_targets(result)
