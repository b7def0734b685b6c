"""Generations that finish right after their first poll was answered, whatever the machine's load.

A sensor test must see its generation pending at the first poll and completed later. With a generation
that lasts a set time, a loaded machine can start the sensor after the end; here the generations last
long enough never to end by themselves, and :func:`complete_after_first_poll` ends each one as soon as the
emulator has answered a poll of it (the answer, pending, was decided before it is recorded as answered).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Long enough that no generation of the test ends before its first poll: they end through the watcher.
NEVER_BY_ITSELF = 600.0


@contextmanager
def complete_after_first_poll(emulator: Any) -> Iterator[set[str]]:
    """Within the block, finish each generation once a poll of it has been answered.

    :param emulator: the test's :class:`~airflow_provider_kling.emulator.KlingEmulator`.
    :return: (yields) the ids finished so far.
    """
    finished: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            polled = {
                r.query.get("generation_id")
                for r in emulator.requests
                if r.method == "GET" and r.status == 200 and r.query.get("generation_id")
            }
            for gen_id in polled - finished:
                if gen_id in emulator.generations:
                    emulator.complete(gen_id)
                    finished.add(gen_id)

    watcher = threading.Thread(target=watch, name="complete-after-first-poll", daemon=True)
    watcher.start()
    try:
        yield finished
    finally:
        stop.set()
        watcher.join()
