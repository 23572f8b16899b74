"""The web child's notices to `mss serve` (webmail/process.py): a relay wake in the child
becomes a line on the pipe, and the parent turns the lines back into its own store
events and relay wakes; a line that does not read is dropped, the next one still read."""

from __future__ import annotations

import asyncio
import json
import os

from mssmail.queue import notify
from mssmail.store.events import ChangeBus, FolderChanged
from webmail.process import ChildNotices, ParentNotifier


class _Store:
    def __init__(self) -> None:
        self.changes = ChangeBus()


def test_the_childs_relay_wake_is_a_line_on_the_pipe() -> None:
    async def scenario() -> bytes:
        read, write = os.pipe()
        notifier = ParentNotifier(asyncio.get_running_loop(), write)
        task = asyncio.ensure_future(notifier.relay_wakes())
        await asyncio.sleep(0)
        notify.wake()  # what `enqueue` does when a send queues mail for the relay
        await asyncio.sleep(0.05)
        task.cancel()
        notifier.changed(FolderChanged(7, 9, "new"))  # from a committing thread in real life
        await asyncio.sleep(0.05)
        os.close(write)
        data = os.read(read, 4096)
        os.close(read)
        return data

    lines = [json.loads(line) for line in asyncio.run(scenario()).splitlines()]
    assert lines == [{"wake": "relay"}, {"changed": [7, 9, "new"]}]


def test_the_parent_publishes_the_childs_lines() -> None:
    store = _Store()
    seen: list[FolderChanged] = []
    store.changes.subscribe(7, seen.append)

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        relay = asyncio.Event()
        notify.register(loop, relay)
        read, write = os.pipe()
        os.set_blocking(read, False)
        # A first line already read with the ready line, then the rest through the pipe.
        ChildNotices(store, read, b'{"changed": [7, 9, "new"]}\n{"chan').follow()
        os.write(write, b'ged": [7, 9, "flags"]}\nnot json\n{"wake": "relay"}\n')
        os.close(write)
        try:
            await asyncio.wait_for(relay.wait(), 2)
            return True
        finally:
            notify.unregister(relay)

    assert asyncio.run(scenario())
    assert seen == [FolderChanged(7, 9, "new"), FolderChanged(7, 9, "flags")]
