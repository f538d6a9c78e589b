"""The ``corral`` command. Each verb imports only what it needs: start-up time counts."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "runtime":
        from .runtime_cli import main as runtime_main
        return runtime_main(argv[1:])
    if argv and argv[0] == "daemon":
        from .daemon import main as daemon_main
        return daemon_main(argv[1:])
    if argv and argv[0] in ("-v", "--version"):
        from .version import VERSION
        print(f"corral version {VERSION}")
        return 0
    if verb_of(argv) == "build":
        # One streaming request: build_cli speaks it on a plain socket, without commands' imports.
        from .build_cli import main as build_main
        return build_main(argv)
    from .commands import main as commands_main
    return commands_main(argv)


def verb_of(argv: list[str]) -> str | None:
    """The verb after commands' global options (``-H HOST``, ``--host HOST``, ``--host=HOST``)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-H", "--host"):
            i += 2
        elif arg.startswith("--host=") or (arg.startswith("-H") and len(arg) > 2):
            i += 1
        else:
            return None if arg.startswith("-") else arg
    return None


def bool_flag(text: str) -> bool:
    """Go's strconv.ParseBool, as docker's boolean flags take a value (``--sig-proxy=false``).

    Raises:
        argparse.ArgumentTypeError: not a boolean.
    """
    value = text.lower()
    if value in ("1", "t", "true"):
        return True
    if value in ("0", "f", "false"):
        return False
    import argparse
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def entry() -> None:
    """The console script: run, flush, and leave without the interpreter's teardown.

    Nothing is left to clean up once a verb returned; skipping teardown saves
    10-20 ms on every `corral runtime run` (bench/README.md).
    """
    import os

    try:
        code = main()
    except SystemExit as exc:      # argparse errors and --help
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
