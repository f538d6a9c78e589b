"""Shared test set-up.

Root tests (marker ``root``) need euid 0 and a real kernel; they run only with
``--run-root``, which the README's ``make test`` passes. Opting in without root
is an error, never a silent skip.
"""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-root", action="store_true", help="run tests needing root and a real kernel")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--run-root") and os.geteuid() != 0:
        raise pytest.UsageError("--run-root needs euid 0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-root"):
        return
    skip = pytest.mark.skip(reason="needs --run-root (root and a real kernel)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def anyio_backend():
    # Async tests run on trio; sleeps finish at once when every task is blocked.
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})
