"""File locks beside the SQLite ledger: one per incident, one per kind of shared work.

An `flock` is held by an open file, and the kernel drops it when its process dies, so whoever
holds an incident's lock knows that any delivery still `in_flight` for it was left by a
process that no longer runs. Locks work between processes on one machine only; a ledger
shared by several machines needs the store's own locks (PostgreSQL advisory locks).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from broadcaster.errors import LockTimeoutError


@contextmanager
def file_lock(
    folder: Path, name: str, what: str, *, wait: float, on_wait: Callable[[str], None] | None = None,
    remove: bool = False,
) -> Iterator[None]:
    """Hold `folder/{name}.lock` exclusively, waiting at most `wait` seconds.

    With `remove`, the file is deleted on release (an alert flood would otherwise leave
    thousands), and a holder checks that the file it locked is still the one in the folder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.lock"
    deadline = time.monotonic() + wait
    told = False
    while True:
        handle = open(path, "a+b")  # noqa: SIM115 (closed below, after the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            if time.monotonic() > deadline:
                raise LockTimeoutError(
                    f"{what} is still busy in another broadcaster after {wait:.0f}s; try again"
                ) from None
            if not told and on_wait is not None:
                on_wait(f"waiting for another broadcaster holding {what}…")
                told = True
            time.sleep(0.05)
            continue
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()  # the holder before us removed that file: lock the new one
    try:
        yield
    finally:
        if remove:
            path.unlink(missing_ok=True)  # still holding the lock: nobody else has this file
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
