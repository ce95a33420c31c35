"""`make demo` (`python -m local.demo`): the whole tracker on this machine, driven by a chaotic Klarna.

Starts the local stack from template.yaml, creates sessions through the tracker's `POST /sessions`, lets
the Klarna simulator's seeded consumers drive them (callbacks dropped, duplicated, delayed and emptied,
Read Session slow, failing or rate limited, as the chaos profile says), shows progress, waits until the
tracker holds a final status for every session (or the deadline passes), then checks the tracker against
what really happened at Klarna (the simulator's truth) and against the events that reached the bus. It
exits 0 only when they agree for every session; the report says what differed otherwise.
"""

from local.demo.report import COMPLETED_EVENT
from local.demo.run import DEMO_ENVIRONMENT, EventsCollector

__all__ = ["COMPLETED_EVENT", "DEMO_ENVIRONMENT", "EventsCollector"]
