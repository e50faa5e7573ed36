"""One writer per part of a store: advisory file locks that the operating system releases when a writer dies.

A run without ``--shard`` writes every chunk: it takes ``.fsar-write.lock`` exclusively. A run with
``--shard i/n`` takes that file shared (shards of one store run side by side) and ``.fsar-shard-i-of-n.lock``
exclusively, so that two processes never write the same shard and an unsharded run never runs beside
shards. The holder writes its pid into the file it holds exclusively, for the refusal message. Locks are
``fcntl.flock`` locks on local files: a kill -9 releases them, nothing stale is left. Stores behind a URL
(fsspec) are not locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from fsar.errors import FsarError

WHOLE = ".fsar-write.lock"


class LockedError(FsarError):
    """Another process writes this store (or this shard of it)."""


def _shard_file(index: int, count: int) -> str:
    return f".fsar-shard-{index}-of-{count}.lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid else "another process"


def _writers(root: Path) -> str:
    """Who holds the store now: the holders of busy shard locks, else the whole-store writer."""
    busy = []
    for path in sorted(root.glob(".fsar-shard-*.lock")):
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: closing the file lets it go again
            except BlockingIOError:
                busy.append(f"{_holder(path)} ({path.name[1:-5]})")
    return ", ".join(busy) or _holder(root / WHOLE)


def _take(path: Path, exclusive: bool) -> IO[str]:
    handle = open(path, "a+")  # noqa: SIM115 - held open for as long as the lock
    try:
        fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise
    if exclusive:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
    return handle


@contextlib.contextmanager
def write_lock(store: str | Path, shard: tuple[int, int] = (0, 1)) -> Iterator[None]:
    """Hold the locks of a writer of ``shard`` (``(0, 1)``: the whole store) of the local store ``store``."""
    if "://" in str(store):
        yield
        return
    root = Path(store)
    index, count = shard
    held: list[IO[str]] = []
    try:
        try:
            held.append(_take(root / WHOLE, exclusive=count == 1))
        except BlockingIOError:
            raise LockedError(f"cache {store} is being written by {_writers(root)}: wait for that run to finish, "
                              f"or give every process its own --shard i/n") from None
        if count > 1:
            try:
                held.append(_take(root / _shard_file(index, count), exclusive=True))
            except BlockingIOError:
                raise LockedError(f"shard {index}/{count} of cache {store} is being written by "
                                  f"{_holder(root / _shard_file(index, count))}: give this process another "
                                  f"--shard") from None
        yield
    finally:
        for handle in reversed(held):
            handle.close()  # closing the file releases its lock
