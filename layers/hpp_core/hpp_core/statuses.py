"""Klarna HPP session statuses and which of them are final.

Klarna has added statuses over time (BACK, DISABLED, ERROR came later), so a status is stored as the
string Klarna sent and anything not listed here is treated as *not* final rather than rejected.
"""

from enum import StrEnum


class Status(StrEnum):
    WAITING = "WAITING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    BACK = "BACK"
    ERROR = "ERROR"
    DISABLED = "DISABLED"
    MANUAL_ID_CHECK = "MANUAL_ID_CHECK"
    # The tracker's own: Klarna no longer knows the session and its expires_at has passed.
    EXPIRED = "EXPIRED"


FINAL_STATUSES: frozenset[str] = frozenset(
    {Status.COMPLETED, Status.CANCELLED, Status.DISABLED, Status.EXPIRED}
)


def is_final(status: str) -> bool:
    """True for a status that may never be overwritten; unknown statuses are not final."""
    return status in FINAL_STATUSES
