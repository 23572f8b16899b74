"""Real `mss` instances for integration tests: `mss init` in a temporary data
directory, ephemeral loopback ports, `mss serve` as a subprocess."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `python -m cli` runs the `mss` command of this checkout; ROOT goes first on PYTHONPATH so
# the checkout's `cli` package is found whatever the working directory (`mss serve` runs
# in the data directory) and however the venv was installed.
MSS = [sys.executable, "-m", "cli"]
PORT_KEYS = ("smtp", "submission", "imap", "imaps", "ldap", "web")


# Ports are drawn below the kernel's ephemeral range (32768-60999 on Linux), so no
# outgoing connection of the suite can take one between this check and the bind of the
# server it is meant for, and a port is handed out once per run: binding port 0 and
# closing can give the same port to two callers (CI saw submission and IMAP of one
# instance both given 42667).
_PORT_RANGE = range(20000, 32000)
_handed_out: set[int] = set()
_port_picker = random.Random(os.getpid())


def free_port() -> int:
    """A loopback TCP port nothing listens on, never returned before in this process."""
    for _ in range(1000):
        port = _port_picker.choice(_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port in 20000-31999")


def set_toml(path: Path, section: str, key: str, value: str) -> None:
    """Set `key = value` (value already TOML) in [section] of a config file."""
    text = path.read_text()
    pattern = re.compile(rf"(^\[{section}\]\n(?:(?!^\[).*\n)*?){key} = .*$", re.M)
    text, count = pattern.subn(lambda m: f"{m.group(1)}{key} = {value}", text, count=1)
    if count != 1:
        text = text.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n", 1)
    path.write_text(text)


class MssInstance:
    def __init__(self, data: Path, domain: str = "a.example", *, demo: bool = True,
                 database_url: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self.data = data
        self.domain = domain
        self.env = {**os.environ, **(env or {})}
        self.env.pop("MSS_DATA", None)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p)
        if database_url:
            self.env["MSS_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.ports = {key: free_port() for key in PORT_KEYS}
        result = self.mss("init", "--domain", domain, *(["--demo"] if demo else []))
        self.init_output = result.stdout
        self.config_path = data / "mss.toml"
        for key, port in self.ports.items():
            set_toml(self.config_path, key, "port", str(port))
        self.passwords: dict[str, str] = {}
        demo_file = data / "demo-passwords.txt"
        if demo_file.exists():
            for line in demo_file.read_text().splitlines():
                address, password = line.split()
                self.passwords[address] = password

    @property
    def ca_file(self) -> Path:
        return self.data / "pki" / "ca.pem"

    def address(self, local: str) -> str:
        return f"{local}@{self.domain}"

    def mss(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*MSS, "--data", str(self.data), *args], input=input,
                                capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"mss {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def configure(self, section: str, key: str, value: str) -> None:
        set_toml(self.config_path, section, key, value)

    def federate_with(self, other: MssInstance, *, require_client_cert: bool = False) -> None:
        """Put `other` in this instance's space of trust: its CA, its domain, a route to its MX."""
        self.configure("trust", "ca_files", json.dumps(["pki/ca.pem", str(other.ca_file)]))
        self.configure("trust", "domains", json.dumps([other.domain]))
        if require_client_cert:
            self.configure("trust", "require_client_cert", "true")
        self.configure("relay", "routes", json.dumps([f"{other.domain}=127.0.0.1:{other.ports['smtp']}"]))
        self.configure("relay", "poll_interval", '"1s"')
        self.configure("relay", "retry_initial", '"1s"')

    def start(self, *only: str, timeout: float = 60, wrapper: tuple[str, ...] = ()) -> None:
        """`mss serve` (only these services, if named), run through `wrapper` if given (a command
        prefix such as `prlimit --nofile=300:300 --`)."""
        args = [*wrapper, *MSS, "--data", str(self.data), "serve"]
        if only:
            args += ["--only", ",".join(only)]
        log = open(self.data / "logs" / "serve.log", "a")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True,
                                        env=self.env, cwd=str(self.data))
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line.rstrip("\n"))
            if line.startswith("mss ready"):
                return
        self.kill()
        raise AssertionError("mss serve did not start:\n" + "\n".join(self.output) + "\n"
                             + (self.data / "logs" / "serve.log").read_text()[-4000:])

    def stop(self, timeout: float = 30) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self.process.stdout:
            self.output.extend(line.rstrip("\n") for line in self.process.stdout)
            self.process.stdout.close()
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stdout:
                self.process.stdout.close()
            self.process = None

    def log_text(self) -> str:
        path = self.data / "logs" / "serve.log"
        return path.read_text() if path.exists() else ""
