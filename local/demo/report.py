"""The demo's verdict: the tracker's rows and the events on the bus, compared with Klarna's truth.

- every session's final status (and, once COMPLETED, its authorization_token or order_id) equals Klarna's;
- exactly the COMPLETED sessions got an `HPP Session Completed` event, with the right token / order id.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local.demo.run import DemoOptions, RunRecord, Tally

COMPLETED_EVENT = "HPP Session Completed"
STATUS_CHANGED_EVENT = "HPP Session Status Changed"


@dataclass(frozen=True)
class EventCheck:
    """What the events on the bus say, checked against Klarna's COMPLETED sessions."""

    right: int  # COMPLETED sessions with exactly one Completed event, with the right token / order id
    status_changed: int  # distinct Status Changed events
    extra_copies: int  # deliveries of an event beyond its first
    mismatches: list[str]


def build_report(
    options: DemoOptions,
    record: RunRecord,
    items: dict[str, dict[str, Any]],
    truth: dict[str, Any],
    events: list[dict[str, Any]],
    tally: Tally,
) -> dict[str, Any]:
    """The report: what the run recorded and the tracker holds (`items`) against the simulator's truth
    and the events received; `tally`: what the functions answered."""
    truth_by_id = {session["session_id"]: session for session in truth["sessions"]}
    agree, mismatches = _compare_sessions(record.created, items, truth_by_id)
    completed_ids = {
        sid for sid in record.created if (truth_by_id.get(sid) or {}).get("final_status") == "COMPLETED"
    }
    checked = check_events(events, completed_ids, truth_by_id)
    mismatches += checked.mismatches
    total = len(record.created)
    report = {
        "sessions": {
            "requested": options.sessions,
            "created": total,
            "create_failures": dict(record.create_failures),
        },
        "chaos": options.chaos,
        "seed": options.seed,
        "final_status": dict(
            sorted(Counter((items.get(sid) or {}).get("status", "MISSING") for sid in record.created).items())
        ),
        "tracker_equals_klarna": {"sessions": agree, "of": total, "percent": _percent(agree, total)},
        "completed_events": {
            "completed_sessions": len(completed_ids),
            "sessions_with_one_right_event": checked.right,
            "status_changed_events": checked.status_changed,
        },
        **_activity(truth["summary"], record, tally, checked.extra_copies),
        "seconds": {
            "creating": round(record.create_seconds, 1),
            "to_converge": None if record.converge_seconds is None else round(record.converge_seconds, 1),
            "session_lifetime": options.session_lifetime,
        },
        "mismatches": mismatches[:50],
        "mismatch_count": len(mismatches),
    }
    report["ok"] = not mismatches and record.converge_seconds is not None and total == options.sessions
    return report


def _compare_sessions(
    created: list[str], items: dict[str, dict[str, Any]], truth_by_id: dict[str, dict[str, Any]]
) -> tuple[int, list[str]]:
    """How many created sessions the tracker holds as Klarna does, and what differs."""
    mismatches = [
        f"{session_id}: created at Klarna but the tracker's POST /sessions failed"
        for session_id in sorted(set(truth_by_id) - set(created))
    ]
    agree = 0
    for session_id in created:
        problem = _state_mismatch(truth_by_id.get(session_id), items.get(session_id))
        if problem is None:
            agree += 1
        else:
            mismatches.append(f"{session_id}: {problem}")
    return agree, mismatches


def _activity(summary: dict[str, Any], record: RunRecord, tally: Tally, extra_copies: int) -> dict[str, Any]:
    """What happened on the way: duplicates, Klarna's callbacks and reads, the functions' outcomes."""
    callbacks = summary["callbacks"]
    return {
        "duplicate_deliveries": {
            "callbacks_sent_twice_by_klarna": callbacks.get("duplicated", 0),
            "event_copies_beyond_the_first": extra_copies,
        },
        "klarna_callbacks": {
            key: callbacks.get(key, 0)
            for key in ("events", "dropped", "delayed", "emptied", "attempts", "delivered", "gave_up")
        },
        "callback_outcomes": dict(sorted(tally.callbacks.items())),
        "poller": {"runs": tally.poll_runs, "outcomes": dict(sorted(tally.poller.items()))},
        "klarna_reads": summary.get("reads", {}),
        "merchant_disables_via_tracker": dict(sorted(record.merchant_deletes.items())),
    }


def check_events(
    events: list[dict[str, Any]], completed_ids: set[str], truth_by_id: dict[str, dict[str, Any]]
) -> EventCheck:
    """The events received (copies included) against the sessions Klarna completed."""
    copies = Counter(_event_id(event) for event in events)
    distinct = list({_event_id(event): event for event in events}.values())
    completed_by_session = _completed_by_session(distinct)
    right, mismatches = 0, []
    for session_id in sorted(completed_ids | set(completed_by_session)):
        details = completed_by_session.get(session_id, [])
        klarna = truth_by_id.get(session_id, {})
        problem = _completed_events_problem(session_id in completed_ids, details, klarna)
        if problem is None:
            right += 1
        else:
            mismatches.append(f"{session_id}: {problem}")
    return EventCheck(
        right=right,
        status_changed=sum(1 for event in distinct if event.get("detail-type") == STATUS_CHANGED_EVENT),
        extra_copies=sum(count - 1 for count in copies.values() if count > 1),
        mismatches=mismatches,
    )


def _completed_by_session(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The details of the Completed events, by session."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event.get("detail-type") == COMPLETED_EVENT:
            found[event["detail"].get("session_id", "")].append(event["detail"])
    return found


def _event_id(event: dict[str, Any]) -> str:
    return str((event.get("detail") or {}).get("event_id", ""))


def _completed_events_problem(
    completed: bool, details: list[dict[str, Any]], klarna: dict[str, Any]
) -> str | None:
    """What is wrong with a session's Completed events (`completed`: whether Klarna's session is)."""
    if not completed:
        return "a Completed event, but Klarna's session is not COMPLETED"
    if len(details) != 1:
        return f"{len(details)} distinct Completed events instead of 1"
    if not _completion_matches(klarna, details[0]):
        return "the Completed event's token / order id differs from Klarna's"
    return None


def _state_mismatch(klarna: dict[str, Any] | None, item: dict[str, Any] | None) -> str | None:
    if klarna is None:
        return "Klarna has no such session"
    if item is None:
        return "the tracker has no row"
    expected = klarna.get("final_status")
    if expected is None:
        return f"still open at Klarna ({klarna['status']}); the tracker says {item.get('status')}"
    if item.get("status") != expected:
        return f"the tracker says {item.get('status')}, Klarna's truth is {expected}"
    if expected == "COMPLETED" and not _completion_matches(klarna, item):
        return "COMPLETED with a token / order id that differs from Klarna's"
    return None


def _completion_matches(klarna: dict[str, Any], stored: dict[str, Any]) -> bool:
    return all(stored.get(name) == klarna.get(name) for name in ("authorization_token", "order_id"))


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def format_report(report: dict[str, Any]) -> str:
    sessions, equal = report["sessions"], report["tracker_equals_klarna"]
    completed, duplicates = report["completed_events"], report["duplicate_deliveries"]
    retried = sum(sessions["create_failures"].values())
    seconds = report["seconds"]
    converge = "did not converge" if seconds["to_converge"] is None else f"{seconds['to_converge']} s"
    lines = [
        "",
        "hpp-tracker demo report",
        "=" * 23,
        f"sessions            {sessions['created']} created of {sessions['requested']} through POST /sessions"
        f" (chaos {report['chaos']}, seed {report['seed']})"
        + (f"; {retried} answers retried ({_pairs(sessions['create_failures'])})" if retried else ""),
        "final status        " + _pairs(report["final_status"]),
        f"tracker == Klarna   {equal['sessions']}/{equal['of']} ({equal['percent']}%)",
        f"Completed events    {completed['sessions_with_one_right_event']}/{completed['completed_sessions']}"
        " COMPLETED sessions with exactly one event and the right token / order id"
        f"; {completed['status_changed_events']} Status Changed events",
        f"duplicates          {duplicates['callbacks_sent_twice_by_klarna']} callbacks sent twice by Klarna;"
        f" {duplicates['event_copies_beyond_the_first']} extra event copies on the queue",
        "Klarna callbacks    " + _pairs(report["klarna_callbacks"]),
        "callback outcomes   " + _pairs(report["callback_outcomes"]),
        f"poller              {report['poller']['runs']} runs; " + _pairs(report["poller"]["outcomes"]),
        "Klarna reads        " + _pairs(report["klarna_reads"]),
        "merchant disables   " + _pairs(report["merchant_disables_via_tracker"]),
        f"time                creating {seconds['creating']} s; every session final after {converge}"
        f" (session lifetime {seconds['session_lifetime']} s)",
    ]
    if report["mismatch_count"]:
        lines.append(f"MISMATCHES          {report['mismatch_count']}")
        lines += [f"  - {mismatch}" for mismatch in report["mismatches"]]
    lines.append("RESULT              " + ("OK" if report["ok"] else "FAILED"))
    return "\n".join(lines)


def _pairs(counts: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "none"
