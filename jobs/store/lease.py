"""Driver leases: who drives a run or an attempt, visible to every agent that shares the store.

A driver (`pushtune run`, a Jenkins train step, a `pushtune resume` a monitor started) holds a
lease row in the run store and renews it from a heartbeat thread every third of
PUSHTUNE_LEASE_SECONDS (default 30). A driver that dies stops renewing; once its lease has expired
a monitor on any machine may take the attempt over. Taking a lease is one conditional write
(`RunStore.acquire_lease`), so of two monitors racing for the same attempt exactly one wins.

A lease held by a dead process on this same agent (its pid is gone) need not be waited for: it is
taken at once, still through the same conditional write. A holder is `agent/pid/nonce`, where the
agent is PUSHTUNE_AGENT, else Jenkins' NODE_NAME, else the host name.

A monitor hands an attempt to the driver it starts by passing its holder in PUSHTUNE_LEASE_HOLDER:
the new driver takes the lease over from that holder, so no third party can slip in between.

Fencing: a driver that finds its lease gone (it was paused, or cut off from the store past the
lease, and another driver took over) calls its `on_lost` (the attempt's driver stops its
training there), and while `held`, every store write it makes is refused unless the lease is
still its own (`RunStore.fenced`, checked in the write's transaction): it records nothing more.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from jobs.clock import utc_text
from jobs.errors import UserError
from jobs.store.database import env_seconds
from jobs.store.run_store import RunStore

DEFAULT_SECONDS = 30.0
HANDED_OVER = "PUSHTUNE_LEASE_HOLDER"  # the lease a monitor hands to the driver it starts


def lease_seconds() -> float:
    return env_seconds("PUSHTUNE_LEASE_SECONDS", DEFAULT_SECONDS, 1, 86400)


def agent_name() -> str:
    return os.environ.get("PUSHTUNE_AGENT") or os.environ.get("NODE_NAME") or socket.gethostname()


def new_holder() -> str:
    return f"{agent_name()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def run_lease(run_id: int) -> str:
    return f"run/{run_id}"


def attempt_lease(run_id: int, n: int) -> str:
    return f"run/{run_id}/attempt/{n}"


def _dead_here(holder: str) -> bool:
    """True when `holder` is a process of this agent that no longer exists."""
    parts = holder.rsplit("/", 2)
    if len(parts) != 3 or parts[0] != agent_name() or not parts[1].isdigit():
        return False
    return not _alive(int(parts[1]))


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a killed driver whose parent is gone may stay
    one for long where nothing reaps orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class Lease:
    """The lease `name` in `store`, held (once acquired) by this process as `holder`."""

    def __init__(self, store: RunStore, name: str, holder: str | None = None):
        self.store, self.name = store, name
        self.holder = holder or new_holder()
        self.seconds = lease_seconds()
        self.lost = False
        self.on_lost: Callable[[], None] | None = None  # called (from the heartbeat) once it is lost
        self._stop: threading.Event | None = None

    def try_acquire(self, *, taking_over: str | None = None) -> bool:
        """Hold the lease if it is free, expired, held by a dead process of this agent, or
        `taking_over`'s (a holder handing it over); then keep it renewed until `release`."""
        stale = taking_over
        if stale is None:
            current = self.store.lease(self.name)
            if current and _dead_here(current["holder"]):
                stale = current["holder"]
        if not self.store.acquire_lease(self.name, self.holder, self.seconds, stale=stale):
            return False
        self._start_heartbeat()
        return True

    def take_for_handover(self) -> bool:
        """Take the lease (as `try_acquire`) without renewing it: for a driver this process starts."""
        taken = self.try_acquire()
        self.keep()
        return taken

    def release(self) -> None:
        if self._stop is None:
            return
        self._stop.set()
        self._stop = None
        self.store.release_lease(self.name, self.holder)

    def keep(self) -> None:
        """Stop renewing but leave the lease in place: it passes to the driver this process
        started (which takes it over from `holder`), or expires if that driver never comes."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def is_held_elsewhere(self) -> bool:
        current = self.store.lease(self.name)
        if current is None or current["holder"] == self.holder:
            return False
        return current["expires_at"] > time.time() and not _dead_here(current["holder"])

    @contextmanager
    def held(self) -> Iterator[None]:
        handed = os.environ.get(HANDED_OVER)
        if not self.try_acquire(taking_over=handed):
            raise UserError(f"{self.name.replace('/', ' ')} is already driven by {self._holder_text()}")
        try:
            with self.store.fenced(self.name, self.holder):
                yield
        finally:
            self.release()

    def _holder_text(self) -> str:
        current = self.store.lease(self.name)
        if current is None:
            return "another process"
        until = utc_text(current["expires_at"])
        return f"{current['holder']} (agent/pid/nonce; its lease runs until {until} unless renewed)"

    def _start_heartbeat(self) -> None:
        if self._stop is not None:
            return
        stop = self._stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(stop,), name=f"lease {self.name}", daemon=True)
        thread.start()

    def _beat(self, stop: threading.Event) -> None:
        renewed_at = time.monotonic()
        while not stop.wait(self.seconds / 3):
            try:  # retried no longer than the lease has left: then it may be another's
                left = self.seconds - (time.monotonic() - renewed_at)
                renewed = self.store.renew_lease(self.name, self.holder, self.seconds, patience=max(left, 0.1))
            except Exception as exc:  # the store is unreachable for longer than its retries
                print(f"pushtune: could not renew the lease {self.name}: {exc}", file=sys.stderr)
                if time.monotonic() - renewed_at <= self.seconds:
                    continue
                why = f"not renewed for over {self.seconds:g} s: another driver may have taken it"
            else:
                if renewed:
                    renewed_at = time.monotonic()
                    continue
                why = "it expired and another driver took it"
            if not stop.is_set():
                self._lose(why)
            return

    def _lose(self, why: str) -> None:
        self.lost = True
        print(f"pushtune: lost the lease {self.name} ({why}); stopping", file=sys.stderr, flush=True)
        if self.on_lost is not None:
            try:
                self.on_lost()
            except Exception as exc:
                print(f"pushtune: could not stop what the lease {self.name} covered: {exc}", file=sys.stderr)
