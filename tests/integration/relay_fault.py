"""A relay process that dies between publish and checkpoint (test hook, not runtime code).

``python -m tests.integration.relay_fault``: reads the usual SAGAFLOW_* settings,
relays one batch, and exits with FAULT_EXIT_STATUS after the broker confirmed it
and before the checkpoint is stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

from eventstore.envelope import EncodedEvent
from sagaflow.settings import load_settings
from streaming.relay import run_relay

FAULT_EXIT_STATUS = 86


async def _die(batch: Sequence[EncodedEvent]) -> None:
    logging.getLogger("sagaflow.relay").error("fault point after publish, before checkpoint")
    os._exit(FAULT_EXIT_STATUS)


if __name__ == "__main__":
    asyncio.run(run_relay(load_settings(), after_publish=_die))
