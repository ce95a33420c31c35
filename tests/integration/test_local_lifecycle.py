"""How the local components stop their processes (local.common.lifecycle) and turn signals into a stop
(local.common.signals), with real processes and real signals."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from local.common.lifecycle import ChildProcesses, ProcessesClosed, stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"
)


def sleeper(processes: ChildProcesses, *, die_with_thread: bool = False) -> subprocess.Popen[bytes]:
    return processes.spawn(
        [sys.executable, "-c", "import time; time.sleep(60)"], die_with_thread=die_with_thread
    )


def test_stop_process_kills_a_child_that_ignores_sigterm_and_reaps_it():
    process = subprocess.Popen([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()  # the handler is installed

    stop_process(process, timeout=0.5)

    assert process.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)  # reaped, not a zombie
    process.stdout.close()
    stop_process(process, timeout=0.5)  # stopping what has ended is harmless
    stop_process(None, timeout=0.5)


def test_closing_ends_every_process_at_once_and_starts_no_more() -> None:
    processes = ChildProcesses()
    started = [sleeper(processes) for _ in range(3)]
    stubborn = processes.spawn([sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE)
    assert stubborn.stdout is not None
    stubborn.stdout.readline()  # its handler is installed

    processes.close(timeout=1.0)

    assert [process.returncode for process in started] == [-signal.SIGTERM] * 3
    assert stubborn.returncode == -signal.SIGKILL
    stubborn.stdout.close()
    with pytest.raises(ProcessesClosed):
        sleeper(processes)


def test_a_process_that_dies_with_its_thread_ends_when_that_thread_does() -> None:
    processes = ChildProcesses()
    spawned: list[subprocess.Popen[bytes]] = []

    def start_and_end() -> None:
        process = processes.spawn(
            [sys.executable, "-c", "import time; print(flush=True); time.sleep(60)"],
            die_with_thread=True,
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None
        process.stdout.readline()  # it runs Python: setpriv has set its parent-death signal
        spawned.append(process)

    thread = threading.Thread(target=start_and_end)
    thread.start()
    thread.join()

    [process] = spawned
    assert process.wait(timeout=10) == -signal.SIGKILL  # setpriv --pdeathsig: the kernel ended it
    assert process.stdout is not None
    process.stdout.close()


# The pattern that hung the local stack: the main thread waits on an Event that the stop sets. With the
# stop called from a signal handler, set() could wait forever for the lock the interrupted wait() held.
WAITS_FOR_A_SIGNAL = textwrap.dedent(
    """\
    import signal, threading, time
    from local.common.signals import StopSignals

    stopped = threading.Event()

    def stop(received):
        print(received.name, flush=True)
        time.sleep(0.3)  # a stop that takes a while: signals meanwhile change nothing
        stopped.set()

    with StopSignals(stop):
        print("waiting", flush=True)
        while not stopped.wait(0.0001):
            pass
    print("stopped", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_becomes_one_stop_call_and_the_handlers_are_put_back(sig: signal.Signals) -> None:
    for _ in range(5):  # each time a few signals, at a random point of the wait loop
        process = subprocess.Popen(
            [sys.executable, "-c", WAITS_FOR_A_SIGNAL], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        assert process.stdout.readline() == "waiting\n"
        for _ in range(3):
            process.send_signal(sig)
            time.sleep(0.05)
        output, _ = process.communicate(timeout=30)
        assert (process.returncode, output) == (0, f"{sig.name}\nstopped True\n")
