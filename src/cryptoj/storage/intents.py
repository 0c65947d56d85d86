"""The order-intent journal: the fast write-ahead of an order, before it is sent.

One small JSON line per order intent (client order id, venue, creation time, the full
spec), appended with a single ``os.write`` to a file opened ``O_APPEND``. The write is
synchronous and takes microseconds: once it returns, the line is in the kernel's page
cache and survives the death of the process (SIGKILL included). With ``sync=True`` each
line is also ``fdatasync``-ed, so it survives a power loss or kernel crash as well (a
disk flush per order: much slower).

:class:`~cryptoj.storage.Storage` owns the journal (see ``docs/storage.md``): it imports
the intents the database lacks when it opens (as NEW orders, which the order manager's
reconciliation then settles) and empties the file whenever every intent in it is stored.

Only one process at a time may write a journal: the file is locked (``flock``) by its
holder, and a second opener gets None from :meth:`IntentJournal.open` (it then writes
ahead to the database, as without a journal). The lock dies with its process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Final, Self

import orjson

from cryptoj.errors import StorageError

__all__ = ["COMPACT_BYTES", "IntentJournal"]

_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync

COMPACT_BYTES: Final = 1 << 20
"""Once every intent is stored, the file is emptied when it has grown past this size (and on close)."""


class IntentJournal:
    """One locked, append-only intent file (see the module doc)."""

    def __init__(self, path: Path, fd: int, *, sync: bool) -> None:
        self.path = path
        self.sync = sync
        self._fd: int | None = fd
        self.size = os.fstat(fd).st_size
        self.appended = 0

    @classmethod
    def open(cls, path: str | Path, *, sync: bool = False) -> Self | None:
        """Open (creating it and its directories) and lock ``path``; None when another holder has it locked."""
        where = Path(path)
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(where, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(f"cannot open the order-intent journal {where}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock the order-intent journal {where}: {exc.strerror or exc}") from exc
        if sync:  # the file's directory entry must survive a power loss too
            with contextlib.suppress(OSError):
                dir_fd = os.open(where.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        return cls(where, fd, sync=sync)

    @property
    def closed(self) -> bool:
        return self._fd is None

    def read(self) -> list[dict[str, Any]]:
        """Every complete intent in the file, oldest first.

        A last line without its newline is a write the process died in (its order was
        never sent) and is skipped; a broken line anywhere else raises ``StorageError``.
        """
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete, torn = lines[:-1], lines[-1]
        out: list[dict[str, Any]] = []
        for number, raw in enumerate(complete, start=1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise StorageError(f"order-intent journal {self.path}, line {number}: not JSON ({exc})") from None
            if not isinstance(record, dict) or not isinstance(record.get("spec"), dict) or not record.get("coid"):
                raise StorageError(f"order-intent journal {self.path}, line {number}: not an order intent")
            out.append(record)
        del torn  # an unfinished last write: its order was never sent
        return out

    def append(self, record: dict[str, Any]) -> None:
        """Write one intent line (and ``fdatasync`` it when ``sync``); ``StorageError`` if it is not all written."""
        fd = self._fd
        if fd is None:
            raise StorageError(f"order-intent journal {self.path} is closed")
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        try:
            written = os.write(fd, line)
            if written != len(line):  # a full disk: never send an order whose intent is not complete
                with contextlib.suppress(OSError):  # and leave no torn line for the next intent to follow
                    os.ftruncate(fd, self.size)
                raise StorageError(f"order-intent journal {self.path}: short write ({written} of {len(line)} bytes)")
            if self.sync:
                _datasync(fd)
        except OSError as exc:
            raise StorageError(f"cannot write the order-intent journal {self.path}: {exc.strerror or exc}") from exc
        self.size += written
        self.appended += 1

    def truncate(self) -> None:
        """Empty the file (every intent in it is stored in the database)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            if self.sync:
                _datasync(self._fd)
        except OSError as exc:
            raise StorageError(f"cannot empty the order-intent journal {self.path}: {exc.strerror or exc}") from exc
        self.size = 0

    def close(self) -> None:
        """Release the lock and the file."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
