"""``corral pull``, ``push``, ``search``, ``login``, ``logout``: the CLI side of supervisor/registry.py.

Credentials live with the user, as docker's do: ``login`` asks the daemon to
check them against the registry, then writes them to ``auth.json`` in
``$CORRAL_CONFIG`` (default ``~/.corral``), mode 0600, replaced atomically;
``pull``/``push``/``search`` send the ones for the image's registry with the
call. The file has docker's shape: ``{"auths": {"host:port": {"auth": base64("user:pass")}}}``.

Progress: on a terminal one line per layer, redrawn in place as messages
arrive; elsewhere one plain line per message, progress counts left out
(docker's own two modes).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import InvalidRequest

DEFAULT_SERVER = "docker.io"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("pull", help="pull an image from a registry (NAME[:TAG] or NAME@DIGEST)")
    sp.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    sp.add_argument("name")
    sp = sub.add_parser("push", help="push an image to its registry")
    sp.add_argument("-q", "--quiet", action="store_true", help="print only the digest line")
    sp.add_argument("name")
    sp = sub.add_parser("search", help="search a registry's catalog")
    sp.add_argument("--limit", type=int, default=25, help="at most this many results (default 25)")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp.add_argument("term", help="REGISTRY/TERM, e.g. localhost:5000/web")
    sp = sub.add_parser("login", help="log in to a registry")
    sp.add_argument("-u", "--username")
    sp.add_argument("-p", "--password")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    sp.add_argument("server", nargs="?", default=DEFAULT_SERVER)
    sp = sub.add_parser("logout", help="forget the credentials of a registry")
    sp.add_argument("server", nargs="?", default=DEFAULT_SERVER)


# ---------------------------------------------------------------- credentials


def config_dir() -> Path:
    return Path(os.environ.get("CORRAL_CONFIG") or Path.home() / ".corral")


def _auth_file() -> Path:
    return config_dir() / "auth.json"


def _server_key(server: str) -> str:
    host = server.split("://", 1)[-1].rstrip("/").split("/", 1)[0]
    return DEFAULT_SERVER if host in ("docker.io", "index.docker.io", "registry-1.docker.io") else host


def _read_auths() -> dict[str, Any]:
    try:
        doc = json.loads(_auth_file().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read {_auth_file()}: {exc}") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    return auths if isinstance(auths, dict) else {}


def _write_auths(auths: dict[str, Any]) -> None:
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / f".auth.json.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": auths}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, _auth_file())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def credentials_for(server: str) -> dict[str, str] | None:
    """The stored ``{"username", "password"}`` for the registry ``server`` names, or None."""
    entry = _read_auths().get(_server_key(server))
    if not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
        return None
    try:
        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return {"username": user, "password": password}


def _registry_of(name: str) -> str:
    first, slash, _ = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return DEFAULT_SERVER


# ---------------------------------------------------------------- verbs


def cmd_pull(client, args) -> int:
    progress = _Progress(sys.stdout, quiet=args.quiet)
    for message in client.stream("image.pull", name=args.name, auth=credentials_for(_registry_of(args.name))):
        progress.show(message)
    progress.done()
    if args.quiet:
        print(args.name)
    return 0


def cmd_push(client, args) -> int:
    progress = _Progress(sys.stdout, quiet=args.quiet)
    last = ""
    for message in client.stream("image.push", name=args.name, auth=credentials_for(_registry_of(args.name))):
        last = message.get("status", last)
        progress.show(message)
    progress.done()
    if args.quiet:
        print(last)
    return 0


def cmd_search(client, args) -> int:
    registry, slash, term = args.term.rpartition("/")
    if not slash:
        raise InvalidRequest("search: name the registry, as REGISTRY/TERM (there is no Docker Hub here)")
    results = client.call("image.search", term=term, registry=registry, limit=args.limit,
                                auth=credentials_for(registry))
    if args.format == "json":
        for r in results:
            print(json.dumps(r))
        return 0
    width = max([len("NAME"), *(len(r["name"]) for r in results)]) + 3
    print(f"{'NAME':<{width}}DESCRIPTION   STARS     OFFICIAL")
    for r in results:
        print(f"{r['name']:<{width}}{r['description']:<14}{r['star_count']:<10}{'[OK]' if r['is_official'] else ''}")
    return 0


def cmd_login(client, args) -> int:
    username = args.username or input("Username: ")
    if args.password_stdin:
        if args.password is not None:
            raise InvalidRequest("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = args.password if args.password is not None else getpass.getpass("Password: ")
    if not username or not password:
        raise InvalidRequest("login: a username and a password are required")
    reply = client.call("system.login", server=args.server, username=username, password=password)
    auths = _read_auths()
    auths[_server_key(args.server)] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _write_auths(auths)
    print(reply.get("Status", "Login Succeeded"))
    return 0


def cmd_logout(client, args) -> int:
    key = _server_key(args.server)
    auths = _read_auths()
    if key not in auths:
        print(f"Not logged in to {key}")
        return 0
    del auths[key]
    _write_auths(auths)
    print(f"Removing login credentials for {key}")
    return 0


VERBS = {"pull": cmd_pull, "push": cmd_push, "search": cmd_search, "login": cmd_login, "logout": cmd_logout}


class _Progress:
    """Docker's progress output: per-layer lines redrawn on a terminal, plain lines elsewhere."""

    def __init__(self, out, *, quiet: bool = False) -> None:
        self._out = out
        self._quiet = quiet
        self._tty = out.isatty()
        self._lines: list[str | None] = []    # what each printed line shows: a layer id, or None

    def show(self, message: dict[str, Any]) -> None:
        if self._quiet:
            return
        status, layer = message.get("status", ""), message.get("id")
        detail = message.get("progressDetail") or {}
        if not self._tty:
            if detail:
                return                        # counts only make sense redrawn
            self._out.write(f"{layer}: {status}\n" if layer else f"{status}\n")
            self._out.flush()
            return
        text = f"{layer}: {status}" if layer else status
        if detail.get("total"):
            text += f" {_size(detail.get('current', 0))}/{_size(detail['total'])}"
        if layer and layer in self._lines:
            up = len(self._lines) - self._lines.index(layer)
            self._out.write(f"\x1b[{up}A\r\x1b[2K{text}\x1b[{up}B\r")
        else:
            self._lines.append(layer)         # None for a line no later message redraws
            self._out.write(text + "\n")
        self._out.flush()

    def done(self) -> None:
        self._out.flush()


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{n}B"
        n /= 1000
    return f"{n}GB"
