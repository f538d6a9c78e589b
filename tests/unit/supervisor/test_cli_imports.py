"""The CLI's start-up: what a verb imports is what it costs on every run (bench/README.md).

A fresh interpreter builds the command line of everyday verbs and lists the
modules it loaded; heavy ones that these verbs do not need must stay out.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# What each of these costs the CLI's start, measured on the 2-core VM: yaml ~20 ms
# (and its regexes), dataclasses with inspect ~9 ms, typing ~3 ms, shutil ~2 ms,
# json ~1.5 ms, socket (selectors, its enums) ~2.5 ms, termios and signal with attach_cli ~2.5 ms, asyncio/anyio ~40 ms, protocols.jsonlog
# (calendar, dataclasses) ~15 ms.
HEAVY = ("yaml", "dataclasses", "inspect", "typing", "shutil", "json", "asyncio", "anyio", "trio", "termios",
         "importlib.metadata", "platform", "socket", "selectors", "supervisor.attach_cli", "supervisor.files_cli",
         "supervisor.registry_cli", "supervisor.build_cli", "supervisor.stats_cli", "supervisor.images_cli",
         "protocols.jsonlog")

SCRIPT = """
import sys
from supervisor import commands
from supervisor.blocking_client import BlockingClient
args = commands._parser(commands.verb_of(sys.argv[1:])).parse_args(sys.argv[1:])
if args.verb in ("run", "create"):
    commands.create_body(args)
    commands.detach_keys_of(args)
if args.verb == "logs":            # the verb itself, on a connection that streams nothing back

    class NoEntries:
        def stream(self, method, **params):
            return iter(())

    commands.cmd_logs(NoEntries(), args)
print("\\n".join(sorted(sys.modules)))
"""


@pytest.mark.parametrize("argv", [
    ["run", "--rm", "-e", "A=1", "-m", "64m", "--health-cmd", "true", "--health-interval", "5s", "busybox", "true"],
    ["ps", "-a"],
    ["logs", "--tail", "10", "web"],
    ["version"],
])
def test_everyday_verbs_import_nothing_heavy(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=60, check=True)
    loaded = set(done.stdout.split())
    assert "supervisor.commands" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
