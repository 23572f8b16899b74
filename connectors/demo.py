"""`mss init --demo`: a folder connector on the DUI application mailbox, so the README
tour can send an HPRIM file by SMTP and see it arrive in `DATA/connectors/dui/`."""

from __future__ import annotations

from typing import Any

from mssmail.store.actors import Actor


def create_demo(store: Any, config: Any) -> list[str]:
    target = (config.data_dir / "connectors" / "dui").resolve()
    target.mkdir(parents=True, exist_ok=True)
    mailbox = f"dui@{config.server.domain}"
    rule = store.add_connector_rule(Actor.admin("mss init --demo"), mailbox, "folder", [str(target)],
                                    match={"kind": "hprim_net"})
    return [f"demo connector {rule.id}: HPRIM Net sent to {mailbox} is dropped into {target}"]
