"""One run per work directory: an OS file lock (released by the kernel when its process dies), plus a
note of who holds it, so a second run can say whom it waited for."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .errors import LockBusyError


class RunLock:
    def __init__(self, workdir: Path, timeout: float):
        self.workdir, self.timeout = workdir, timeout
        self._lock = None

    def acquire(self, command: str) -> None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.workdir / ".lock"))
        owner = self.workdir / ".lock.owner"
        try:
            lock.acquire(timeout=self.timeout)
        except Timeout:
            try:
                who = json.loads(owner.read_text())
                holder = f"pid {who['pid']} on {who['host']} running '{who['command']}' since {who['since']}"
            except (OSError, ValueError, KeyError):
                holder = "another process"
            raise LockBusyError(
                f"work directory {self.workdir} is in use by {holder}; waited {self.timeout:g} s "
                "(run.lock_timeout). Runs on one work directory take turns; the lock is released when that process "
                "exits, even if it is killed."
            ) from None
        owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                     "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
