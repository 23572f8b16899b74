"""`trust_for` keeps what it read until one of the trust files changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

from crypto import context, pki
from crypto.keystore import KeyStore


def _config(data: Path) -> SimpleNamespace:
    return SimpleNamespace(data_dir=data, path=lambda name: Path(name), trust=SimpleNamespace(ca_files=[]))


def test_trust_is_read_again_when_a_file_changes(tmp_path: Path) -> None:
    pki.create_ca(tmp_path / "pki", "here")
    other = tmp_path / "other"
    pki.create_ca(other, "elsewhere")
    config = _config(tmp_path)
    ks = KeyStore(tmp_path / "pki")
    first = context.trust_for(config, ks)
    assert len(first.anchors) == 1
    again = context.trust_for(config, ks)
    assert again.anchors[0] is first.anchors[0]  # not read again
    again.anchors.clear()  # a caller's list is its own
    assert len(context.trust_for(config, ks).anchors) == 1

    (tmp_path / "pki" / "trust").mkdir(exist_ok=True)
    shutil.copy(other / pki.CA_CERT, tmp_path / "pki" / "trust" / "other.pem")  # `mss cert trust`
    names = {a.subject.rfc4514_string() for a in context.trust_for(config, ks).anchors}
    assert len(names) == 2 and any("elsewhere" in n for n in names)

    os.remove(tmp_path / "pki" / "trust" / "other.pem")
    assert len(context.trust_for(config, ks).anchors) == 1
