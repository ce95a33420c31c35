"""`status`, `reconcile` and `republish`: one session's truth, and the repairs that use the tracker's own
rules.

`reconcile` is the poller's decision for each session (`hpp_core.poller.poll_session`: read Klarna,
record through the one write path, reschedule or expire), paced by the poller's rate limiter at the
poller's rate. `republish` builds a session's events from its stored row with the publisher's own
builder (`hpp_core.publishing.events_for_session`), so they carry the ids they were first published with.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hpp_core.klarna import KlarnaError, KlarnaNotFound, KlarnaSession
from hpp_core.models import DueSession, TrackedSession
from hpp_core.poller import PollOutcome, PollPolicy, due_sessions, poll_session
from hpp_core.ports import KlarnaReader, RecoveryStore
from hpp_core.publishing import UnpublishableRecord, events_for_session
from hpp_core.rate_limit import RateLimiter
from hpp_core.timestamps import format_timestamp, to_epoch_millis, utc_now
from ops.report import Report
from ops.target import Target

# Due times run far ahead (a parked session waits for its expiry): this is past any of them.
_EVERY_DUE_TIME_MS = 2**62
# Klarna reads in flight at once while reconciling (each one paced by the rate limiter).
RECONCILE_WORKERS = 4
# Outcomes that leave a session unreconciled: the command exits non-zero.
_NOT_RECONCILED = frozenset(
    {
        *(
            str(o)
            for o in (PollOutcome.ERROR, PollOutcome.THROTTLED, PollOutcome.AUTH_FAILED, PollOutcome.LEFT_DUE)
        ),
        "not_tracked",
        "not_polled",
    }
)


# -- status -----------------------------------------------------------------------------------------


def status(target: Target, session_id: str) -> Report:
    """The stored row (token masked) beside Klarna's answer now, and what differs."""
    repository = target.repository()
    stored = repository.get_session(session_id)
    due = repository.due_session(session_id)
    report = Report("status", data={"session_id": session_id})
    report.data["stored"] = _stored_view(stored, due)
    klarna_view, answer = _klarna_view(target, session_id)
    report.data["klarna"] = klarna_view
    differences = differences_between(stored, answer, klarna_view)
    report.data["differences"] = differences
    report.say(f"session {session_id}")
    report.say(f"  stored: {_describe(report.data['stored'])}")
    report.say(f"  klarna: {_describe(klarna_view)}")
    report.say("  differs: " + ("; ".join(differences) if differences else "nothing"))
    if "error" in klarna_view:
        report.ok = False
    return report


def _stored_view(stored: TrackedSession | None, due: DueSession | None) -> dict[str, Any]:
    if stored is None:
        return {"found": False}
    # model_dump masks the token (SecretStr) and leaves out the secret's hash.
    view: dict[str, Any] = {"found": True, **stored.model_dump(mode="json", exclude_none=True)}
    view["callback_secret_on_file"] = stored.has_callback_secret
    if due is not None:
        view["next_poll_at"] = format_timestamp(datetime.fromtimestamp(due.poll_due_at / 1000, UTC))
        view["polls_without_change"] = due.poll_attempts
    return view


def _klarna_view(target: Target, session_id: str) -> tuple[dict[str, Any], KlarnaSession | None]:
    try:
        answer = target.klarna().read_session(session_id)
    except KlarnaNotFound:
        return {"found": False, "note": "Klarna does not know it (expired, or never created)"}, None
    except KlarnaError as error:
        return {"error": str(error)}, None
    return {"found": True, **answer.model_dump(mode="json", exclude_none=True)}, answer


def differences_between(
    stored: TrackedSession | None, answer: KlarnaSession | None, klarna_view: dict[str, Any]
) -> list[str]:
    """What the table and Klarna disagree on, named without values that are secret."""
    if "error" in klarna_view:
        return ["unknown: Klarna could not be read"]
    if stored is None or answer is None:
        if stored is None and answer is None:
            return []
        return ["not tracked by the tracker" if stored is None else "Klarna no longer knows the session"]
    found = []
    if stored.status != answer.status:
        found.append(f"status: stored {stored.status}, Klarna {answer.status}")
    if stored.updated_at_ms == 0:
        found.append("nothing recorded from Klarna yet (the row is as the tracker created it)")
    elif stored.updated_at_ms != to_epoch_millis(answer.updated_at):
        stored_at, klarna_at = format_timestamp(stored.updated_at), format_timestamp(answer.updated_at)
        found.append(f"updated_at: stored {stored_at}, Klarna {klarna_at}")
    if answer.expires_at is not None and stored.expires_at != answer.expires_at:
        found.append("expires_at differs")
    stored_token = stored.authorization_token.get_secret_value() if stored.authorization_token else None
    klarna_token = answer.authorization_token.get_secret_value() if answer.authorization_token else None
    if klarna_token is not None and stored_token != klarna_token:
        found.append("authorization_token differs (values not shown)")
    for name in ("order_id", "klarna_reference"):
        if getattr(answer, name) is not None and getattr(stored, name) != getattr(answer, name):
            found.append(f"{name} differs")
    return found


def _describe(view: dict[str, Any]) -> str:
    if "error" in view:
        return f"could not be read: {view['error']}"
    if not view.get("found"):
        return str(view.get("note", "not tracked"))
    parts = [f"{view['status']} (updated {view['updated_at']}"]
    if view.get("last_source"):
        parts.append(f", from {view['last_source']} at {view.get('recorded_at')}")
    parts.append(")")
    for name in ("authorization_token", "order_id", "klarna_reference", "expires_at", "next_poll_at"):
        if name in view:
            parts.append(f" {name}={view[name]}")
    return "".join(parts)


# -- reconcile --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reconciled:
    session_id: str
    outcome: str
    before: str | None
    after: str | None
    error: str | None = None

    def line(self) -> str:
        moved = f"{self.before} -> {self.after}" if self.before != self.after else (self.after or "-")
        return f"{self.session_id}  {self.outcome:<13} {moved}" + (f"  ({self.error})" if self.error else "")


def reconcile(
    target: Target,
    *,
    session_ids: Sequence[str] = (),
    active_since: timedelta | None = None,
    all_due: bool = False,
    rate_per_second: float | None = None,
) -> Report:
    """Read Klarna now for the named sessions, those active within `active_since`, or every due one, and
    record what Klarna says through the one write path, as the poller does."""
    settings = target.settings()
    store = target.repository()
    if session_ids:
        candidates, results = _named(store, session_ids)
    else:
        candidates, results = _listed(store, active_since, all_due=all_due), []
    rate = rate_per_second or settings.poll_rate_per_second
    results += reconcile_sessions(
        candidates, store=store, klarna=target.klarna(), policy=settings.policy(), rate=rate
    )
    counts = Counter(result.outcome for result in results)
    report = Report("reconcile", data={"results": [vars(result) for result in results]})
    report.data["summary"] = dict(sorted(counts.items()))
    for result in results:
        report.say(result.line())
    totals = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
    report.say(f"{len(results)} session(s): {totals}" if results else "no session to reconcile")
    report.ok = not any(result.outcome in _NOT_RECONCILED for result in results)
    return report


def _named(store: RecoveryStore, session_ids: Sequence[str]) -> tuple[list[DueSession], list[Reconciled]]:
    """The named sessions the poller would read, and what is said of the others without reading Klarna."""
    candidates, settled = [], []
    for session_id in dict.fromkeys(session_ids):
        due = store.due_session(session_id)
        if due is not None:
            candidates.append(due)
            continue
        session = store.get_session(session_id)
        if session is None:
            settled.append(Reconciled(session_id, "not_tracked", None, None))
        elif session.is_final:
            settled.append(Reconciled(session_id, "already_final", session.status, session.status))
        else:  # the poller gave up on it (Klarna kept answering 404 and it has no expires_at)
            settled.append(Reconciled(session_id, "not_polled", session.status, session.status))
    return candidates, settled


def _listed(store: RecoveryStore, active_since: timedelta | None, *, all_due: bool) -> list[DueSession]:
    """The not-final sessions to reconcile, listed before any is written (a write moves a session in the
    due index, which must not make it come round twice)."""
    now_ms = to_epoch_millis(utc_now())
    if all_due:
        return list(due_sessions(store, due_by_ms=now_ms, page_size=100))
    assert active_since is not None  # noqa: S101 - the command line requires one of the three
    since_ms = now_ms - int(active_since.total_seconds() * 1000)
    return [
        due
        for due in due_sessions(store, due_by_ms=_EVERY_DUE_TIME_MS, page_size=100)
        # Klarna reported on it within the window, or never has (tracked, no callback ever stored).
        if not due.updated_at_ms or due.updated_at_ms >= since_ms
    ]


def reconcile_sessions(
    candidates: Iterable[DueSession],
    *,
    store: RecoveryStore,
    klarna: KlarnaReader,
    policy: PollPolicy,
    rate: float,
    workers: int = RECONCILE_WORKERS,
) -> list[Reconciled]:
    """`poll_session` for each candidate, at most `rate` Klarna reads per second; the rest is left due
    once Klarna refuses the credentials (every other read would fail alike)."""
    limiter = RateLimiter(rate)
    refused = False

    def one(due: DueSession) -> Reconciled:
        nonlocal refused
        if refused or not limiter.acquire(time.monotonic() + 3600):
            return Reconciled(due.session_id, str(PollOutcome.LEFT_DUE), due.status, due.status)
        result = poll_session(due, store=store, klarna=klarna, policy=policy)
        if result.outcome is PollOutcome.THROTTLED:
            limiter.slow_down(result.retry_after)
        elif result.outcome is PollOutcome.AUTH_FAILED:
            refused = True
        after = store.get_session(due.session_id)
        error = f"{result.error_kind}: {result.error}" if result.error is not None else result.error_kind
        return Reconciled(
            due.session_id, str(result.outcome), due.status, after.status if after else None, error
        )

    with ThreadPoolExecutor(max_workers=max(1, min(workers, policy.concurrency))) as pool:
        return list(pool.map(one, candidates))


# -- republish --------------------------------------------------------------------------------------


def republish(target: Target, session_ids: Sequence[str]) -> Report:
    """Each session's events put on the bus again, built from its stored row: the same event ids."""
    store = target.repository()
    report = Report("republish", data={"events": [], "sessions": []})
    events = []
    for session_id in dict.fromkeys(session_ids):
        session = store.get_session(session_id)
        if session is None:
            report.failed(f"{session_id}  not tracked: nothing to republish")
            report.data["sessions"].append({"session_id": session_id, "outcome": "not_tracked"})
            continue
        try:
            # The row keeps no previous status: the events say null, as for a session first seen so.
            built = events_for_session(session, previous_status=None, time=session.recorded_at)
        except UnpublishableRecord as error:
            report.failed(f"{session_id}  cannot be published: {error}")
            report.data["sessions"].append({"session_id": session_id, "outcome": "unpublishable"})
            continue
        events += built
        report.data["sessions"].append(
            {"session_id": session_id, "outcome": "published", "status": session.status}
        )
    publish(target, events, report)
    return report


def publish(target: Target, events: Sequence[Any], report: Report) -> bool:
    """Put `events` on the bus, one report line and one `events` entry each; True when all were taken."""
    answers = target.event_bus().put(events) if events else []
    for event, failure in zip(events, answers, strict=True):
        entry = {"session_id": event.session_id, "detail_type": event.detail_type, "event_id": event.event_id}
        if failure is None:
            report.data.setdefault("events", []).append({**entry, "published": True})
            report.say(f"{event.session_id}  {event.detail_type:<27} {event.event_id}  published")
        else:
            report.data.setdefault("events", []).append(
                {**entry, "published": False, "error": failure.error_code}
            )
            report.failed(
                f"{event.session_id}  {event.detail_type:<27} {event.event_id}  NOT published: "
                f"{failure.error_code} {failure.error_message}"
            )
    return all(failure is None for failure in answers)


__all__ = [
    "Reconciled",
    "differences_between",
    "publish",
    "reconcile",
    "reconcile_sessions",
    "republish",
    "status",
]
