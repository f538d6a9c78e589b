"""Concurrent creates through the RPC client: generated and explicit names never collide."""

from __future__ import annotations

import anyio
import pytest

from supervisor.client import RpcError, connect

from ._daemon import Daemon, daemon_fixture  # noqa: F401 - the fixture

pytestmark = pytest.mark.root


def test_concurrent_creates_get_distinct_names(daemon: Daemon) -> None:
    body = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {}}
    outcomes: list[object] = []

    async def create(name: str | None) -> None:
        async with connect(daemon.socket) as client:
            try:
                outcomes.append(await client.call("container.create", body=body, name=name))
            except RpcError as exc:
                outcomes.append(exc)

    async def main() -> None:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(24):
                    tg.start_soon(create, None)
                for _ in range(4):
                    tg.start_soon(create, "same")

    anyio.run(main)
    created = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, RpcError)]
    assert len(created) == 25 and len(refused) == 3          # 24 generated + one "same"
    assert all(e.code == "CONFLICT" and "already in use" in e.message for e in refused)
    names = [row["Names"][0] for row in daemon.json_lines("ps", "-a")]
    assert len(names) == len(set(names)) == 25
