"""The Engine's pure helpers: Docker filters, mount planning, ps output. No daemon, no root."""

from __future__ import annotations

import pytest

from supervisor.engine import (
    PS_FILTERS,
    container_matches,
    labels_match,
    normalize_filters,
    parse_ps_output,
    plan_mounts,
)
from supervisor.errors import InvalidRequest


def _row(**over):
    row = {"Id": "abcdef" + "0" * 58, "Names": ["/web-1"], "State": "running", "Labels": {"tier": "web", "x": "1"},
           "ImageID": "sha256:" + "1234" * 16, "Mounts": [{"Type": "volume", "Name": "data", "Destination": "/d"}]}
    return {**row, **over}


def test_normalize_accepts_both_docker_spellings_and_rejects_unknown_keys() -> None:
    assert normalize_filters({"status": ["exited"], "label": {"a=b": True, "c": False}}, PS_FILTERS) == {
        "status": ["exited"], "label": ["a=b"]}
    assert normalize_filters(None, PS_FILTERS) == {} and normalize_filters({"name": []}, PS_FILTERS) == {}
    with pytest.raises(InvalidRequest, match="invalid filter 'bogus'"):
        normalize_filters({"bogus": ["1"]}, PS_FILTERS)
    with pytest.raises(InvalidRequest, match="'since' is not supported yet"):
        normalize_filters({"since": ["x"]}, PS_FILTERS, not_yet=frozenset({"since"}))
    with pytest.raises(InvalidRequest, match="must be strings"):
        normalize_filters({"name": [1]}, PS_FILTERS)


def test_labels_are_and_ed() -> None:
    labels = {"tier": "web", "x": "1", "empty": ""}
    assert labels_match(labels, []) and labels_match(labels, ["tier", "x=1", "empty="])
    assert not labels_match(labels, ["tier=web", "y"]) and not labels_match(labels, ["tier=db"])
    assert not labels_match(labels, ["empty=1"])


@pytest.mark.parametrize(("filters", "exit_code", "expected"), [
    ({"status": ["exited", "running"]}, None, True),              # one key: OR
    ({"status": ["restarting"]}, None, False),
    ({"status": ["running"], "label": ["tier=db"]}, None, False),  # keys: AND
    ({"id": ["abcd"]}, None, True),
    ({"id": ["bcde"]}, None, False),                             # a prefix, not a substring
    ({"name": ["^/web"]}, None, True),
    ({"name": ["eb-"]}, None, True),                             # searched anywhere
    ({"name": ["^web"]}, None, False),                           # names carry their "/"
    ({"exited": ["3"]}, 3, True),
    ({"exited": ["3"]}, None, False),                            # not exited: no exit code to match
    ({"ancestor": ["123412341234"]}, None, True),                # an id prefix needs no lookup
    ({"ancestor": ["busybox"]}, None, False),                    # a name the caller did not resolve
    ({"volume": ["data"]}, None, True),
    ({"volume": ["/d"]}, None, True),
    ({"volume": ["other"]}, None, False),
])
def test_container_matches(filters, exit_code, expected) -> None:
    assert container_matches(_row(), filters, exit_code=exit_code) is expected


def test_container_matches_resolved_ancestors_and_bad_values() -> None:
    assert container_matches(_row(), {"ancestor": ["busybox"]}, ancestor_ids={"sha256:" + "1234" * 16})
    with pytest.raises(InvalidRequest, match="invalid filter 'name=\\('"):
        container_matches(_row(), {"name": ["("]})
    with pytest.raises(InvalidRequest, match="invalid filter 'exited=x'"):
        container_matches(_row(), {"exited": ["x"]}, exit_code=0)


def test_plan_mounts_tells_binds_from_volumes_and_adds_anonymous_ones() -> None:
    mounts = plan_mounts(["/host:/a:ro", "data:/b", "logs:/c:rw"], {"/b": {}, "/scratch": {}})
    assert [(m["Type"], m.get("Name"), m["Destination"], m["RW"]) for m in mounts] == [
        ("bind", None, "/a", False), ("volume", "data", "/b", True), ("volume", "logs", "/c", True),
        ("volume", "", "/scratch", True)]                        # /b is covered by a bind: no anonymous one
    assert mounts[0]["Propagation"] == "rprivate" and mounts[0]["Mode"] == "ro"
    assert plan_mounts(None, None) == []


@pytest.mark.parametrize(("binds", "volumes", "message"), [
    (["/only"], None, "invalid bind '/only'"),
    (["a:b"], None, "invalid bind 'a:b'"),
    (["/a:/b:ro:x"], None, "invalid bind"),
    (["bad$name:/x"], None, "invalid characters for a local volume name"),
    (["./rel:/x"], None, "invalid characters for a local volume name"),
    ("/a:/b", None, "must be a list of strings"),
    (None, {"rel": {}}, "not an absolute path"),
])
def test_plan_mounts_rejects(binds, volumes, message) -> None:
    with pytest.raises(InvalidRequest, match=message):
        plan_mounts(binds, volumes)


PS_EF = """\
UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 06:54 ?        00:00:10 /sbin/init splash
root        4242    4200  0 07:59 ?        00:00:00 sleep 1000
root        4243    4242  0 07:59 ?        00:00:00 sh -c  echo  two  spaces
"""


def test_parse_ps_output_keeps_the_command_whole_and_only_our_pids() -> None:
    titles, rows = parse_ps_output(PS_EF, [4242, 4243])
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert rows == [["root", "4242", "4200", "0", "07:59", "?", "00:00:00", "sleep 1000"],
                    ["root", "4243", "4242", "0", "07:59", "?", "00:00:00", "sh -c  echo  two  spaces"]]
    assert parse_ps_output(PS_EF, []) == (titles, [])


def test_parse_ps_output_needs_a_pid_column() -> None:
    with pytest.raises(ValueError, match="no PID column"):
        parse_ps_output("COMMAND\nsleep\n", [1])
    with pytest.raises(ValueError, match="printed nothing"):
        parse_ps_output("\n", [1])
