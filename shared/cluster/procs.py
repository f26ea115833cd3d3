"""Service child processes: start one, wait until its /ready says so, stop it by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shared.cluster.natsd import free_port


@dataclass
class ServiceProc:
    name: str
    popen: subprocess.Popen[bytes]
    system_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.system_port}/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 60.0) -> ServiceProc:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            if self.ready():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after `timeout`."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait()


def spawn(name: str, module: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None,
          detach: bool = False, cwd: Path | None = None, drop_env: tuple[str, ...] = ()) -> ServiceProc:
    """`python -m services.MODULE ARGS --system-port P`, output to log_dir/NAME.log (`cwd`: another checkout's
    code, for before/after benchmarks; `drop_env`: variables of this process the child must not inherit)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    for key in drop_env:
        full_env.pop(key, None)
    cmd = [sys.executable, "-m", f"services.{module}", *args, "--system-port", str(port)]
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                 start_new_session=detach, stdin=subprocess.DEVNULL, cwd=cwd)
    return ServiceProc(name, popen, port, log_path)
