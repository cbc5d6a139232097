"""Child processes of the runner: start with a private environment, stop politely, then kill.

Secrets reach children through environment variables, never argv (which every user
can read in ``ps``). Each child's stdout and stderr go to its own log file in the run
folder, so when a child dies the runner can show its last lines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from rrlab.urls import mask_text

STOP_TIMEOUT_S = 30.0


class ChildProcess:
    """One child (consumer or producer) with its log file."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # Ctrl+C reaches the runner only; it stops children in order
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        self.process.wait()
        self._log.close()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S, *, asked: bool = False) -> int:
        """Wait up to ``timeout_s`` for the child to exit, then SIGKILL; returns the exit status.

        ``asked``: the child was already told to stop (over its channel). Otherwise it gets
        a SIGTERM first. Never both: a child takes a second request as "exit at once".
        """
        if self.alive() and not asked:
            self.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.wait(timeout_s)

    def wait(self, timeout_s: float | None = None) -> int:
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        if not self._log.closed:
            self._log.close()
        return code

    def last_log_lines(self, count: int = 15) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                lines = deque(handle, maxlen=count)
        except OSError:
            return ""
        return mask_text(b"".join(lines).decode("utf-8", "replace")).rstrip()

    def describe_exit(self) -> str:
        code = self.returncode
        if code is None:
            status = "is still running"
        elif code < 0:
            status = f"was killed by signal {signal.Signals(-code).name}"
        else:
            status = f"exited with status {code}"
        tail = self.last_log_lines()
        log = f"\nLast lines of {self.log_path}:\n{tail}" if tail else ""
        return f"{self.name} (pid {self.pid}) {status}.{log}"

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signum)


def python_module_command(
    module: str, args: list[str], wrapper: list[str] | None = None
) -> list[str]:
    """``python -m module args``, optionally under a profiler's runner (e.g. memray run)."""
    if wrapper:
        return [sys.executable, "-m", *wrapper, "-m", module, *args]
    return [sys.executable, "-m", module, *args]


def wait_until(predicate, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
