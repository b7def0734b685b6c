"""A watch over the files this process opens (an audit hook: it sees ``open()`` and ``os.open()``).

The gallery tests prove a page opens no file a task or an XCom named; the batch tests count how often a
row's input file is read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Every path the process opens while :func:`watching_opens` is active (an audit hook: it sees
#: ``open()`` and ``os.open()``).
OPENED: list[str] = []
_WATCHING: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _WATCHING and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@contextmanager
def watching_opens() -> Iterator[None]:
    """Record into :data:`OPENED` every path opened inside the block."""
    _WATCHING.append(True)
    try:
        yield
    finally:
        _WATCHING.clear()
