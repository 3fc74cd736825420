"""``mmp serve`` as a child process on a free 127.0.0.1 port, returned once ``/readyz`` says 200 — for
tests, benchmarks and scripts that need a real server rather than an in-process TestClient."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], *, token: str = "", env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
           timeout: float = 180, quiet: bool = False) -> tuple[subprocess.Popen, str]:
    """Start ``python -m pipeline serve --port P *args``; return (process, base URL) once ready. ``env`` is
    added to this process's environment (``MMP_TOKEN`` set from ``token``). A server that exits or is not
    ready within ``timeout`` seconds is killed and the error says which."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "pipeline", "serve", "--port", str(port), *args]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {}), "MMP_TOKEN": token}
    output = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(command, cwd=cwd, env=environment, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mmp serve exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", headers=headers, timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop(proc, timeout=0)
    raise RuntimeError(f"mmp serve was not ready within {timeout:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if timeout:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()
