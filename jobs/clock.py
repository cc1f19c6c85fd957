"""Times as pushtune shows them to people: in UTC, and saying so (terminal, report, logs, JSON)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_text(timestamp: float, *, seconds: bool = True) -> str:
    """`2026-12-07 16:29:35 UTC` (`2026-12-07 16:29 UTC` without seconds)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def utc_iso(timestamp: float) -> str:
    """`2026-12-07T16:29:35+00:00`, for JSON."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
