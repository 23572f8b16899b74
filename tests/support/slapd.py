"""A private OpenLDAP slapd (back-mdb) on a loopback port, for the sync tests and the
directory benchmark: its own configuration, our schema (from directory/schema.py), its
own database directory; nothing of the system's slapd is used."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from directory.schema import attribute_types, object_classes
from tests.support.instance import free_port

SLAPD = shutil.which("slapd") or ("/usr/sbin/slapd" if os.path.exists("/usr/sbin/slapd") else None)
SLAPADD = shutil.which("slapadd") or ("/usr/sbin/slapadd" if os.path.exists("/usr/sbin/slapadd") else None)


class SlapdError(RuntimeError):
    """slapd would not start or load (its own words attached)."""


class Slapd:
    def __init__(self, root: Path, suffix: str, *, indexes: list[str], root_pw: str | None = None,
                 maxsize: int = 268435456, extra: str = "") -> None:
        self.root = root
        self.suffix = suffix
        self.root_dn = f"cn=admin,{suffix}"
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        (root / "db").mkdir(parents=True)
        schema = root / "mss.schema"
        schema.write_text("".join(f"attributetype {a}\n" for a in attribute_types())
                          + "".join(f"objectclass {o}\n" for o in object_classes()))
        self.conf = root / "slapd.conf"
        password = f"rootpw {root_pw}\n" if root_pw else ""
        index_lines = "".join(f"index {i}\n" for i in indexes)
        self.conf.write_text(f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {schema}
pidfile {root}/slapd.pid
argsfile {root}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
{extra}database mdb
maxsize {maxsize}
suffix "{suffix}"
rootdn "{self.root_dn}"
{password}directory {root}/db
{index_lines}""")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen([SLAPD or "slapd", "-f", str(self.conf), "-h", f"{self.url}/", "-d", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise SlapdError("slapd exited: " + (self.proc.stderr.read() if self.proc.stderr else "")) \
                        from None
                time.sleep(0.1)
        raise SlapdError("slapd did not listen")

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
