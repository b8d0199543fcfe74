"""Child processes on loopback: start one with its output in a log file, wait until it
listens, stop it."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

HZ = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready: Callable[[], bool], timeout: float = 20.0, proc=None, what: str = "ready") -> None:
    """Polls `ready()` until it returns true (an OSError, e.g. a refused connection, counts as
    not yet). Fails early if `proc` (anything with poll() and returncode) exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {what}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"not {what} after {timeout:g} s")


def accepts(port: int) -> bool:
    """Whether something accepts a TCP connection on 127.0.0.1:port right now."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Waits until something accepts connections on 127.0.0.1:port. Fails early if `proc`
    exits first."""
    wait_until(lambda: accepts(port), timeout, proc, f"listening on {port}")


class Process:
    """A child process whose stdout and stderr go to `log_path` (with `stdout_path`: stdout
    there, stderr to `log_path`). With `port`, the constructor returns once something listens
    there; with `ready` (a callable), once it returns true (after the port, if both). If the
    process exits or times out first, it is stopped and the error names the log. `env` is
    added to this process's environment; with `inherit_env=False` it is the whole of it."""

    def __init__(self, args, log_path, *, port: int | None = None, timeout: float = 60.0,
                 env: dict[str, str] | None = None, cwd=None, append: bool = False,
                 stdout_path=None, ready: Callable[[], bool] | None = None, inherit_env: bool = True):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.stdout_path = Path(stdout_path) if stdout_path is not None else None
        self.port = port
        mode = "ab" if append else "wb"
        self._log = open(self.log_path, mode)
        self._out = open(self.stdout_path, mode) if self.stdout_path is not None else None
        try:
            self.popen = subprocess.Popen(self.args, stdout=self._out or self._log,
                                          stderr=self._log if self._out else subprocess.STDOUT, cwd=cwd,
                                          env={**(os.environ if inherit_env else {}), **(env or {})})
        except OSError:
            self._close_files()
            raise
        try:
            if port is not None:
                wait_port(port, timeout, self.popen)
            if ready is not None:
                wait_until(ready, timeout, self.popen)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise RuntimeError(f"{Path(self.args[0]).name}: {e}; log: {self.log_path}\n{self.log()[-2000:]}") from None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ

    def peak_rss_kib(self) -> int:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{self.pid}/status").read_text())
        return int(m.group(1)) if m else 0

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; returns the exit status (negative:
        the signal that ended it). Idempotent."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._close_files()
        return self.popen.returncode

    def _close_files(self):
        for f in (self._log, self._out):
            if f is not None and not f.closed:
                f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
