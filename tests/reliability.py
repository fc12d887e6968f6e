"""What the reliability tests tried and what held, printed at the end of the run
(and summarised in docs/RELIABILITY.md)."""

from __future__ import annotations

#: ``(what was tried, how many, how many held)`` in the order the tests recorded them.
RECORDS: list[tuple[str, int, int]] = []


def record(what: str, tried: int, held: int) -> None:
    """Note one result line."""
    RECORDS.append((what, tried, held))
