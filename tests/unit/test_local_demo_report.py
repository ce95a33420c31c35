"""The demo's verdict (local.demo.report): the tracker's rows and the events on the bus against Klarna's
truth; every way they can differ is named, and duplicates of one event are counted, not held against it."""

from collections import Counter
from typing import Any

from local.demo.report import COMPLETED_EVENT, STATUS_CHANGED_EVENT, build_report, format_report
from local.demo.run import DemoOptions, RunRecord, Tally

SUMMARY = {"callbacks": {"events": 4, "duplicated": 1, "delivered": 5}, "reads": {"ok": 2}}


def klarna(session_id: str, final: str | None, token: str | None = None) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "status": final or "IN_PROGRESS",
        "final_status": final,
        "authorization_token": token,
        "order_id": None,
    }


def row(session_id: str, status: str, token: str | None = None) -> dict[str, Any]:
    item = {"session_id": session_id, "status": status}
    return item | ({"authorization_token": token} if token else {})


def event(kind: str, event_id: str, session_id: str, token: str | None = None) -> dict[str, Any]:
    detail = {"event_id": event_id, "session_id": session_id, "authorization_token": token, "order_id": None}
    return {"detail-type": kind, "detail": detail}


def report_for(
    truth: list[dict[str, Any]], items: list[dict[str, Any]], events: list[dict[str, Any]], created: list[str]
) -> dict[str, Any]:
    record = RunRecord(created=created, create_failures=Counter({"http_503": 1}), converge_seconds=12.3)
    tally = Tally(callbacks=Counter({"applied": 3}), poller=Counter({"unchanged": 2}), poll_runs=2)
    return build_report(
        DemoOptions(sessions=len(created), chaos="default", seed=3),
        record,
        {item["session_id"]: item for item in items},
        {"sessions": truth, "summary": SUMMARY},
        events,
        tally,
    )


def test_a_tracker_that_matches_klarna_is_ok_and_duplicate_copies_are_only_counted() -> None:
    report = report_for(
        truth=[klarna("a", "COMPLETED", "tok-a"), klarna("b", "EXPIRED")],
        items=[row("a", "COMPLETED", "tok-a"), row("b", "EXPIRED")],
        events=[
            event(COMPLETED_EVENT, "e1", "a", "tok-a"),
            event(COMPLETED_EVENT, "e1", "a", "tok-a"),  # at-least-once: a second copy of the same event
            event(STATUS_CHANGED_EVENT, "e2", "b"),
            event(STATUS_CHANGED_EVENT, "e2", "b"),
        ],
        created=["a", "b"],
    )

    assert report["ok"], report["mismatches"]
    assert report["tracker_equals_klarna"] == {"sessions": 2, "of": 2, "percent": 100.0}
    assert report["completed_events"] == {
        "completed_sessions": 1,
        "sessions_with_one_right_event": 1,
        "status_changed_events": 1,
    }
    assert report["duplicate_deliveries"]["event_copies_beyond_the_first"] == 2
    assert report["poller"] == {"runs": 2, "outcomes": {"unchanged": 2}}
    assert format_report(report).endswith("RESULT              OK")


def test_every_difference_from_klarna_is_named() -> None:
    report = report_for(
        truth=[
            klarna("wrong-status", "CANCELLED"),
            klarna("wrong-token", "COMPLETED", "tok-real"),
            klarna("no-row", "EXPIRED"),
            klarna("still-open", None),
            klarna("twice", "COMPLETED", "tok-t"),
            klarna("not-completed", "DISABLED"),
            klarna("untracked", "EXPIRED"),
        ],
        items=[
            row("wrong-status", "EXPIRED"),
            row("wrong-token", "COMPLETED", "tok-forged"),
            row("still-open", "IN_PROGRESS"),
            row("twice", "COMPLETED", "tok-t"),
            row("not-completed", "DISABLED"),
        ],
        events=[
            event(COMPLETED_EVENT, "e1", "wrong-token", "tok-forged"),
            event(COMPLETED_EVENT, "e2", "twice", "tok-t"),
            event(COMPLETED_EVENT, "e3", "twice", "tok-t"),
            event(COMPLETED_EVENT, "e4", "not-completed"),
        ],
        created=["wrong-status", "wrong-token", "no-row", "still-open", "twice", "not-completed"],
    )

    assert not report["ok"]
    problems = "\n".join(report["mismatches"])
    assert "untracked: created at Klarna but the tracker's POST /sessions failed" in problems
    assert "wrong-status: the tracker says EXPIRED, Klarna's truth is CANCELLED" in problems
    assert "wrong-token: COMPLETED with a token / order id that differs from Klarna's" in problems
    assert "wrong-token: the Completed event's token / order id differs from Klarna's" in problems
    assert "no-row: the tracker has no row" in problems
    assert "still-open: still open at Klarna (IN_PROGRESS); the tracker says IN_PROGRESS" in problems
    assert "twice: 2 distinct Completed events instead of 1" in problems
    assert "not-completed: a Completed event, but Klarna's session is not COMPLETED" in problems
    assert report["mismatch_count"] == 8
    assert report["tracker_equals_klarna"]["sessions"] == 2  # twice and not-completed hold Klarna's state
    assert report["completed_events"]["sessions_with_one_right_event"] == 0
    assert "MISMATCHES          8" in format_report(report)


def test_a_run_that_did_not_converge_is_not_ok_even_if_nothing_differs() -> None:
    report = report_for(truth=[klarna("a", "EXPIRED")], items=[row("a", "EXPIRED")], events=[], created=["a"])
    assert report["ok"]
    report = build_report(
        DemoOptions(sessions=1),
        RunRecord(created=["a"], converge_seconds=None),
        {"a": row("a", "EXPIRED")},
        {"sessions": [klarna("a", "EXPIRED")], "summary": SUMMARY},
        [],
        Tally(),
    )
    assert not report["ok"] and report["mismatch_count"] == 0
    assert "did not converge" in format_report(report)
