"""The relay's lease: any number of relays run, exactly one publishes a destination.

Two mechanisms, each covering the other's blind spot:

* **who may publish now**: a PostgreSQL session advisory lock keyed by the
  destination (``kafka:<topic>``, ``rabbitmq:<exchange>``), held on a connection
  of its own. PostgreSQL drops it the moment that session ends: a relay killed
  with ``kill -9`` (the kernel closes its socket), a relay whose connection broke,
  every relay at once when PostgreSQL restarts. A standby polls
  ``pg_try_advisory_lock`` every ``SAGAFLOW_RELAY_STANDBY_POLL_S`` and takes over.
* **who published last** (the fencing token): the ``relay_leases`` row of the
  destination, whose ``epoch`` grows by one on every acquisition. The relay's
  checkpoint write succeeds only while the row still holds the writer's epoch
  (``streaming.relay.save_checkpoint``).

Why both: a lock alone cannot stop a relay that lost it without knowing. Its lock
session can end while the process is paused (SIGSTOP, a long GC, a VM freeze: the
session's ``idle_session_timeout`` ends it, see ``_connect``) or cut off, while its
broker connection and its pool still work; when it wakes it would finish its
batch and store a checkpoint that a new holder is already moving. With the fence,
that write is refused, the old relay learns it lost the lease and stands by, and
the checkpoint only ever moves under the current epoch. What the old relay sent to
the broker before noticing is a duplicate of what the new one re-sends from the
checkpoint: consumers drop it by per-stream version (at least once, as always).

The row also records which checkpoint (``SAGAFLOW_RELAY_NAME``) owns the
destination: a relay with another checkpoint name for the same destination would
publish the whole stream a second time, so it is refused (``LeaseRefused``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from eventstore.migrate import psycopg_url
from sagaflow.settings import Settings, Transport

log = logging.getLogger("sagaflow.relay")

#: The advisory lock's first key for every relay lease (pg_locks.classid); the
#: second is a hash of the destination. Why 31 bits: pg_locks shows keys as oids.
LEASE_LOCK_CLASS = zlib.crc32(b"sagaflow-relay-lease") & 0x7FFFFFFF


class LeaseRefused(Exception):
    """The destination belongs to another checkpoint name: this relay must not run."""


class LeaseLost(Exception):
    """This relay no longer holds the destination's lease (another took over)."""


@dataclass(frozen=True)
class Fence:
    """What a checkpoint write must still find in the lease row to be accepted."""

    destination: str
    relay_name: str
    epoch: int


@dataclass(frozen=True)
class LeaseStatus:
    """The lease row of a destination, and whether a relay holds its lock right now."""

    destination: str
    relay_name: str
    holder: str
    epoch: int
    takeovers: int
    acquired_at: datetime
    held: bool


def destination(settings: Settings) -> str:
    """Where this relay publishes: the lease is per destination, not per checkpoint."""
    kind = settings.transport_kind
    if kind is Transport.KAFKA:
        return f"kafka:{settings.kafka_topic}"
    if kind is Transport.RABBITMQ:
        return f"rabbitmq:{settings.rabbitmq_exchange}"
    raise ValueError("SAGAFLOW_TRANSPORT=embedded has no relay: projections read the store")


def lock_key(dest: str) -> tuple[int, int]:
    """The advisory lock of ``dest``: (class, crc32 of the destination).

    Why a hash is enough: two destinations of one database sharing a key (odds of
    about 1 in 2^31 per pair) would only make one of their relays wait as a
    standby, never let two publish one destination.
    """
    return LEASE_LOCK_CLASS, zlib.crc32(dest.encode()) & 0x7FFFFFFF


def relay_id(settings: Settings) -> str:
    """This relay's name in logs, the lease row and /metrics: the setting, or host:pid."""
    return settings.relay_id or f"{socket.gethostname()}:{os.getpid()}"


def _refusal(dest: str, owner: str, ours: str) -> LeaseRefused:
    return LeaseRefused(
        f"{dest} is already published from checkpoint {owner!r} (relay_leases); a relay "
        f"with SAGAFLOW_RELAY_NAME={ours} would publish a second copy of the stream: "
        f"run it with SAGAFLOW_RELAY_NAME={owner} (it then stands by) or another destination"
    )


class RelayLease:
    """One relay's claim on its destination: stand by, acquire, watch, release."""

    def __init__(self, settings: Settings, database_url: str, *, holder: str | None = None) -> None:
        self.settings = settings
        self.database_url = database_url
        self.destination = destination(settings)
        self.holder = holder or relay_id(settings)
        self.key = lock_key(self.destination)
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.fence: Fence | None = None
        #: set when the lease was held and is lost (connection gone, heartbeat late)
        self.lost = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self._said_standby: tuple[str, int] | None = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self.conn is not None and not self.conn.closed:
            return self.conn
        timeout = self.settings.relay_lease_timeout_s
        conn = await psycopg.AsyncConnection.connect(
            psycopg_url(self.database_url),
            autocommit=True,
            connect_timeout=max(1, int(timeout)),
            application_name=f"sagaflow relay {self.holder}"[:63],
            # Why keepalives: PostgreSQL must notice a peer that vanished without
            # closing its socket (a host that died), not only one that exited.
            keepalives=1,
            keepalives_idle=max(1, int(timeout)),
            keepalives_interval=1,
            keepalives_count=3,
        )
        ms = int(timeout * 1000)
        # Why idle_session_timeout (PostgreSQL 14+): the lock must not outlive a relay that
        # stopped talking (paused, cut off) while its socket stays open. The active relay
        # heartbeats every SAGAFLOW_RELAY_LEASE_HEARTBEAT_S (at most half of the
        # timeout, see settings), so only a silent one loses its session, and with
        # it the lock. statement_timeout bounds the takeover's row lock wait.
        await conn.execute(f"SET idle_session_timeout = {ms}")
        await conn.execute(f"SET statement_timeout = {ms}")
        self.conn = conn
        return conn

    async def check_owner(self) -> None:
        """Raise LeaseRefused when another checkpoint name owns this destination."""
        conn = await self._connect()
        cur = await conn.execute(
            "SELECT relay_name FROM relay_leases WHERE destination = %s", (self.destination,)
        )
        row = await cur.fetchone()
        if row is not None and row[0] != self.settings.relay_name:
            raise _refusal(self.destination, row[0], self.settings.relay_name)

    async def acquire(self, stop: asyncio.Event) -> Fence | None:
        """Stand by until this relay holds the lease; its fence (None once ``stop`` is set).

        Connection errors while standing by are retried here (PostgreSQL restarting);
        a LeaseRefused is raised (a configuration error: waiting will not help).
        """
        poll = self.settings.relay_standby_poll_s
        delay = self.settings.relay_backoff_initial_s
        while not stop.is_set():
            try:
                fence = await self._try_acquire()
                delay = self.settings.relay_backoff_initial_s
                if fence is not None:
                    return fence
                await _sleep_or_stop(stop, poll)
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError) as exc:
                log.warning(
                    "relay %s: lease of %s: %s (%s); retrying in %.1fs",
                    self.holder,
                    self.destination,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await self._close()
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, self.settings.relay_backoff_max_s)
        return None

    async def _try_acquire(self) -> Fence | None:
        await self.check_owner()
        conn = await self._connect()
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key)
        row = await cur.fetchone()
        if not (row and row[0]):
            await self._say_standby(conn)
            return None
        try:
            fence, previous = await self._take(conn)
        except BaseException:
            # Why unlock on any failure here: holding the lock without a fence would
            # keep every standby waiting while this relay publishes nothing.
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock(%s, %s)", self.key)
            raise
        self.fence = fence
        self.lost = asyncio.Event()
        self._said_standby = None
        self._watch = asyncio.create_task(self._heartbeat(conn, fence))
        since = "" if previous is None else f", after {previous}"
        log.warning(
            "relay %s: active for %s (checkpoint %s, epoch %d%s)",
            self.holder,
            self.destination,
            fence.relay_name,
            fence.epoch,
            since,
        )
        return fence

    async def _take(self, conn: psycopg.AsyncConnection[Any]) -> tuple[Fence, str | None]:
        """Bump the epoch (the advisory lock is ours); the fence and the previous holder."""
        name = self.settings.relay_name
        async with conn.transaction():
            # Why FOR UPDATE: a stale holder's checkpoint write locks the row FOR SHARE
            # in the same statement as its epoch check. Waiting for it here means its
            # write either commits before the new epoch (and the new holder reads
            # that checkpoint after this) or finds the new epoch and is refused.
            cur = await conn.execute(
                "SELECT relay_name, holder FROM relay_leases WHERE destination = %s FOR UPDATE",
                (self.destination,),
            )
            old = await cur.fetchone()
            if old is not None and old[0] != name:
                raise _refusal(self.destination, old[0], name)
            cur = await conn.execute(
                """
                INSERT INTO relay_leases (destination, relay_name, epoch, holder)
                VALUES (%(d)s, %(n)s, 1, %(h)s)
                ON CONFLICT (destination) DO UPDATE
                SET epoch = relay_leases.epoch + 1, holder = EXCLUDED.holder,
                    takeovers = relay_leases.takeovers
                        + (relay_leases.holder <> EXCLUDED.holder)::int,
                    acquired_at = now()
                RETURNING epoch
                """,
                {"d": self.destination, "n": name, "h": self.holder},
            )
            row = await cur.fetchone()
            assert row is not None
        return Fence(self.destination, name, int(row[0])), (old[1] if old else None)

    async def _say_standby(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(
            "SELECT holder, epoch FROM relay_leases WHERE destination = %s", (self.destination,)
        )
        row = await cur.fetchone()
        seen = (str(row[0]), int(row[1])) if row else ("?", 0)
        if seen != self._said_standby:
            self._said_standby = seen
            log.warning(
                "relay %s: standing by, %s is published by %s (epoch %d)",
                self.holder,
                self.destination,
                *seen,
            )

    async def _heartbeat(self, conn: psycopg.AsyncConnection[Any], fence: Fence) -> None:
        """While held: check the session and the epoch each heartbeat; set ``lost`` if not.

        Why step down when a heartbeat is late, not only when it fails: after
        ``relay_lease_timeout_s`` of silence PostgreSQL ends the session and a standby
        may take over; stepping down a heartbeat earlier keeps the old relay from
        publishing beside the new one (the fence still refuses its checkpoint if the
        race is lost).
        """
        every = self.settings.relay_lease_heartbeat_s
        budget = self.settings.relay_lease_timeout_s - every
        last_ok = time.monotonic()
        try:
            while True:
                await asyncio.sleep(every)
                try:
                    cur = await asyncio.wait_for(
                        conn.execute(
                            "SELECT epoch FROM relay_leases WHERE destination = %s",
                            (fence.destination,),
                        ),
                        budget,
                    )
                    row = await cur.fetchone()
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    reason = f"its lock connection failed ({type(exc).__name__}: {exc})"
                    break
                if row is None or int(row[0]) != fence.epoch:
                    reason = f"the epoch moved to {row[0] if row else '?'}"
                    break
                if time.monotonic() - last_ok > budget + every:
                    reason = f"a heartbeat came {time.monotonic() - last_ok:.1f}s late"
                    break
                last_ok = time.monotonic()
        except asyncio.CancelledError:
            return
        log.warning(
            "relay %s: lost the lease of %s (epoch %d): %s; standing by",
            self.holder,
            fence.destination,
            fence.epoch,
            reason,
        )
        self.lost.set()

    def alive(self) -> bool:
        """True while the lease is held and no loss was seen."""
        return self.fence is not None and not self.lost.is_set()

    async def release(self) -> None:
        """Give the lease up (unlock, close the session); a standby takes over."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
            self._watch = None
        if self.fence is not None and self.conn is not None and not self.conn.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", self.key), 2
                )
        self.fence = None
        await self._close()

    async def _close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


async def lease_status(conn: Any, dest: str) -> LeaseStatus | None:
    """The lease row of ``dest`` and whether its lock is held now (None: never leased)."""
    cls, obj = lock_key(dest)
    cur = await conn.execute(
        """
        SELECT relay_name, holder, epoch, takeovers, acquired_at,
               EXISTS (SELECT 1 FROM pg_locks k
                       WHERE k.locktype = 'advisory' AND k.granted AND k.objsubid = 2
                         AND k.classid = %s::oid AND k.objid = %s::oid
                         AND k.database = (SELECT oid FROM pg_database
                                           WHERE datname = current_database()))
        FROM relay_leases WHERE destination = %s
        """,
        (cls, obj, dest),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    name, holder, epoch, takeovers, acquired_at, held = row
    return LeaseStatus(dest, name, holder, int(epoch), int(takeovers), acquired_at, bool(held))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
