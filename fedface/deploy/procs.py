"""Processes a deployment starts, tracked by PID, and the network checks made before starting them.

Every process is started in its own session (process group = its PID), so stopping it also ends the children Flower
spawns (``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp``). PIDs land in ``<workdir>/pids.json`` so that
``scripts/deploy stop`` ends exactly what this deployment started, never anything found by name.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

from fedface.io import atomic_write_json


class DeployError(RuntimeError):
    """A deployment step that failed; the message names what to fix."""


def check_port_free(host: str, port: int) -> None:
    """Fail before starting anything when ``host:port`` is taken (another SuperLink, an old run)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # as the servers themselves do (uvicorn): a closed connection in TIME_WAIT does not block a new listener
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise DeployError(f"port {port} on {host} is in use ({err.strerror}): stop what holds it (`scripts/"
                              "deploy stop`, or `ss -ltnp`) or choose another port in the deploy file") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_link(host: str, port: int, ca_file: Path, timeout: float = 5.0) -> None:
    """The SuperLink at ``host:port`` answers and presents a certificate that ``ca_file`` signed and that names
    ``host``: the same checks a SuperNode makes, with an error that says which one failed."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        raise DeployError(f"cannot reach the SuperLink at {host}:{port} ({err.strerror or err}): is it running, is "
                          "superlink.address right, does a firewall block the port?") from None
    ctx = ssl.create_default_context(cafile=str(ca_file))
    try:
        with sock, ctx.wrap_socket(sock, server_hostname=host):
            pass
    except ssl.SSLCertVerificationError as err:
        raise DeployError(f"the SuperLink at {host}:{port} presented a certificate that fails verification against "
                          f"{ca_file}: {err.verify_message} (wrong CA, an expired certificate, or one that does not "
                          f"name {host}: copy the federation's ca.crt, or re-issue with `scripts/deploy certs "
                          "--renew`)") from None
    except (ssl.SSLError, OSError) as err:
        raise DeployError(f"TLS handshake with the SuperLink at {host}:{port} failed ({err}): is it started with "
                          "TLS?") from None


class Processes:
    """The processes of one deployment folder: start (logged, own session), wait until listening, stop by PID."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.pid_file = workdir / "pids.json"
        self.started: dict[str, int] = json.loads(self.pid_file.read_text()) if self.pid_file.is_file() else {}
        self._popen: dict[str, subprocess.Popen] = {}

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        if self.alive(name):
            raise DeployError(f"{name} is already running (PID {self.started[name]}): `scripts/deploy stop` first")
        self.log(name).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log(name), "ab") as out:
            try:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            except FileNotFoundError:
                raise DeployError(f"{argv[0]} not found: install fedface with its dependencies (flwr) in this "
                                  "Python environment") from None
        self._popen[name] = proc
        self.started[name] = proc.pid
        atomic_write_json(self.pid_file, self.started)
        return proc

    def alive(self, name: str) -> bool:
        pid = self.started.get(name)
        if pid is None:
            return False
        if name in self._popen:
            return self._popen[name].poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def tail(self, name: str, lines: int = 15) -> str:
        text = self.log(name).read_text(errors="replace") if self.log(name).is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_listening(self, name: str, host: str, port: int, timeout: float) -> None:
        """Until ``host:port`` accepts connections; DeployError with the log's tail if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive(name):
                raise DeployError(f"{name} exited during start-up; last lines of {self.log(name)}:\n{self.tail(name)}")
            try:
                socket.create_connection((host, port), timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.3)
        raise DeployError(f"{name} did not listen on {host}:{port} within {timeout:.0f} s; see {self.log(name)}")

    def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM to the process group started as ``name``, SIGKILL after ``grace`` seconds."""
        pid = self.started.pop(name, None)
        if pid is None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            if self._wait_gone(name, pid, wait):
                break
        self._popen.pop(name, None)
        atomic_write_json(self.pid_file, self.started)

    def _wait_gone(self, name: str, pid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if name in self._popen:
                self._popen[name].poll()  # reap our own child so it does not linger as a zombie
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
        return False

    def stop_all(self) -> None:
        for name in reversed(list(self.started)):  # nodes before the link
            self.stop(name)
