"""Child processes on loopback: start one with its output in a log file, wait until it
listens, stop it."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Waits until something accepts connections on 127.0.0.1:port. Fails early if `proc`
    exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


class Process:
    """A child process whose stdout and stderr go to `log_path`. With `port`, the constructor
    returns once something listens there; if the process exits or times out first, it is
    stopped and the error names the log."""

    def __init__(self, args, log_path, *, port: int | None = None, timeout: float = 60.0,
                 env: dict[str, str] | None = None, cwd=None, append: bool = False):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.port = port
        self._log = open(self.log_path, "ab" if append else "wb")
        try:
            self.popen = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
                                          env={**os.environ, **(env or {})})
        except OSError:
            self._log.close()
            raise
        if port is not None:
            try:
                wait_port(port, timeout, self.popen)
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
        if not self._log.closed:
            self._log.close()
        return self.popen.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
