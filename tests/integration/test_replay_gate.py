"""The replay gate from the command line: export real runs, replay folders of them.

``sagaflow replay DIR`` is what CI runs over ``tests/replay/histories`` (every saga
type); a team adds production histories with ``sagaflow histories export``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.client import Client
from typer.testing import CliRunner

from eventstore.memory import InMemoryEventStore
from sagaflow.cli import app
from sagaflow.settings import Settings
from worker import build_worker
from workflows.client import start_saga
from workflows.registry import default_registry
from workflows.trip_saga import TRIP_SAGA, TripInput

pytestmark = pytest.mark.integration

HISTORIES = Path(__file__).parent.parent / "replay" / "histories"


def _lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line]


def test_every_committed_history_of_every_saga_type_replays() -> None:
    result = CliRunner().invoke(app, ["replay", str(HISTORIES)])
    assert result.exit_code == 0, result.output
    files = sorted(HISTORIES.rglob("*.json"))
    types = {p.relative_to(HISTORIES).parts[0] for p in files}
    assert types == {"order", "returns", "trip"}
    assert _lines(result.output)[-1] == f"{len(files)} of {len(files)} histories replay"


def _doctored(tmp_path: Path, name: str, old: str, new: str) -> Path:
    source = (HISTORIES / "order" / "happy_path.json").read_text()
    assert old in source
    target = tmp_path / f"{name}.json"
    target.write_text(source.replace(old, new))
    return target


def test_a_mismatch_names_the_workflow_and_the_first_event_it_does_not_reproduce(
    tmp_path: Path,
) -> None:
    # As if the code now charged through another activity than the run recorded.
    _doctored(tmp_path, "order-42", '"name": "charge_payment"', '"name": "charge_card"')
    result = CliRunner().invoke(app, ["replay", str(tmp_path)])
    assert result.exit_code == 1, result.output
    failed = [line for line in _lines(result.output) if line.startswith("replay failed")]
    assert len(failed) == 1, result.output
    assert "(workflow order-42)" in failed[0]
    assert "event " in failed[0]
    assert "Traceback" not in result.output


def test_files_that_are_not_histories_get_one_line_each_and_the_rest_still_replays(
    tmp_path: Path,
) -> None:
    (tmp_path / "notes.json").write_text('{"hello": "world"}')
    (tmp_path / "broken.json").write_text("{not json")
    _doctored(tmp_path, "shipping-1", '"name": "OrderSaga"', '"name": "ShippingSaga"')
    (tmp_path / "good.json").write_text((HISTORIES / "order" / "happy_path.json").read_text())
    result = CliRunner().invoke(app, ["replay", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = _lines(result.output)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 3, result.output
    assert any("broken.json: not JSON" in e for e in errors)
    assert any("notes.json: not a Temporal history" in e for e in errors)
    assert any("'ShippingSaga' is not a registered saga type" in e for e in errors)
    assert f"replay ok: {tmp_path / 'good.json'}" in lines
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["replay", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2
    assert _lines(missing.output) == [f"error: {tmp_path / 'nowhere'}: no such file or folder"]


async def test_exported_histories_of_real_runs_replay(
    settings: Settings, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.temporal_address
    client = await Client.connect(settings.temporal_address)
    cfg = settings.model_copy(update={"task_queue": f"q-{unique}", "saga_search_attributes": False})
    trip = TripInput(
        f"trip-{unique}", "t-1", "LIS", "BER", "2027-05-01", "2027-05-08", 100, 200, 300
    )
    async with build_worker(client, cfg, InMemoryEventStore()):
        handle = await start_saga(
            client, cfg, default_registry().get(TRIP_SAGA), trip, saga_id=trip.trip_id
        )
        assert (await handle.result())["status"] == "completed"
    monkeypatch.setenv("SAGAFLOW_TEMPORAL_ADDRESS", settings.temporal_address)
    query = f"WorkflowId='{trip.trip_id}'"
    out = tmp_path / "exported"
    for _ in range(50):  # visibility follows the run within moments
        exported = await asyncio.to_thread(
            CliRunner().invoke, app, ["histories", "export", "--query", query, str(out)]
        )
        assert exported.exit_code == 0, exported.output
        if "1 histories written" in exported.output:
            break
        await asyncio.sleep(0.2)
    written = out / f"{trip.trip_id}.json"
    assert json.loads(written.read_text())["events"][0]["eventType"]
    replayed = await asyncio.to_thread(CliRunner().invoke, app, ["replay", str(out)])
    assert replayed.exit_code == 0, replayed.output
    assert _lines(replayed.output)[-1] == "1 of 1 histories replay"


def test_a_bad_query_is_one_line(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.temporal_address
    monkeypatch.setenv("SAGAFLOW_TEMPORAL_ADDRESS", settings.temporal_address)
    result = CliRunner().invoke(
        app, ["histories", "export", "--query", "NoSuchField ~~ 3", str(tmp_path)]
    )
    assert result.exit_code == 2, result.output
    assert _lines(result.output)[0].startswith("error: Temporal refused: ")
    assert len(_lines(result.output)) == 1
