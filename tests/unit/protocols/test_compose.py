"""The Compose file subset: keys -> create body, interpolation, env files, order and plans."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from protocols.compose import (
    SERVICE_COMPLETED_SUCCESSFULLY,
    SERVICE_HEALTHY,
    SERVICE_STARTED,
    ComposeError,
    ComposeProject,
    Plan,
    diff,
    interpolate,
    normalize_project_name,
    parse_compose,
    parse_duration_ns,
    parse_env_file,
    referenced_env_files,
    start_order,
)
from protocols.container_config import runtime_config
from protocols.errors import RemoteProtocolError

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "compose"
BASE = "/srv/proj"


def parse(text: str, **kw) -> ComposeProject:
    kw.setdefault("project", "proj")
    kw.setdefault("base_dir", BASE)
    return parse_compose(textwrap.dedent(text), **kw)


def body(text: str, service: str = "s", **kw) -> dict:
    return parse(text, **kw).services[service].create_body


def one(extra: str) -> str:
    """A file with one service `s` and `extra` (indented YAML) as its further keys."""
    return "services:\n  s:\n    image: busybox\n" + textwrap.indent(textwrap.dedent(extra).rstrip("\n") + "\n", "    ")


# -- every key lands in the right field ---------------------------------------------------------------


@pytest.fixture(scope="module")
def every_key() -> ComposeProject:
    return parse_compose(
        (FIXTURES / "every-key.yaml").read_text(), project="ignored", base_dir=BASE,
        env_files={f"{BASE}/app.env": "SHARED=from-file\nONLY_FILE=yes\n"},
        environ={"PASSED_THROUGH": "from-shell", "HOME": "/home/me"},
    )


def test_every_key_maps_to_the_create_body(every_key: ComposeProject) -> None:
    app = every_key.services["app"]
    b = app.create_body
    assert every_key.name == "ignored"
    assert b["Image"] == "registry.example/app:1.2"
    assert b["Cmd"] == ["./serve", "--port", "8000", "--name", "my app"]       # shell-split, defaulted
    assert b["Entrypoint"] == ["/sbin/tini", "--"]
    assert b["Env"] == ["FROM_LIST=1", "ONLY_FILE=yes", "PASSED_THROUGH=from-shell", "SHARED=from-environment"]
    assert b["Healthcheck"] == {"Test": ["CMD-SHELL", "curl -fs http://localhost:8000/health"],
                                "Interval": 90_000_000_000, "Timeout": 10_000_000_000, "Retries": 3,
                                "StartPeriod": 500_000_000}
    assert b["StopSignal"] == "SIGQUIT" and b["StopTimeout"] == 60
    assert b["WorkingDir"] == "/srv" and b["User"] == "1000:1000" and b["Hostname"] == "app-host"
    assert app.container_name == "the-app"
    assert b["Labels"]["org.example.team"] == "web" and b["Labels"]["org.example.tier"] == "1"
    assert b["Labels"]["com.docker.compose.project"] == "ignored"
    assert b["Labels"]["com.docker.compose.service"] == "app"
    assert b["Labels"]["com.docker.compose.config-hash"] == app.config_hash
    h = b["HostConfig"]
    assert h["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}
    assert h["Memory"] == 256 << 20 and h["MemorySwap"] == 512 << 20
    assert h["NanoCpus"] == 1_500_000_000 and h["PidsLimit"] == 100
    assert h["Binds"] == [
        "/srv/proj/static:/srv/static:ro",          # relative -> base_dir
        "/var/log/app:/var/log/app",
        "ignored_appdata:/var/lib/app",             # named volume, project-prefixed
        "/home/me/certs:/certs:ro",                 # ~ from HOME, long syntax
        "ignored_appdata:/backup",
    ]
    assert h["Tmpfs"] == {"/scratch": f"size={16 << 20}", "/run": "", "/tmp": "size=64m,mode=1777"}
    assert h["Privileged"] is False and h["ReadonlyRootfs"] is True
    assert app.depends_on == {"db": SERVICE_HEALTHY, "migrate": SERVICE_COMPLETED_SUCCESSFULLY}


def test_deploy_limits_and_plain_services(every_key: ComposeProject) -> None:
    db = every_key.services["db"]
    assert db.container_name == "ignored-db-1"     # Compose v2's name
    assert db.create_body["HostConfig"] == {
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "Memory": 1 << 30, "NanoCpus": 500_000_000, "PidsLimit": 200,
    }
    assert db.create_body["Healthcheck"] == {"Test": ["CMD", "pg_isready"], "Interval": 5_000_000_000}
    migrate = every_key.services["migrate"]
    assert migrate.create_body["Cmd"] == ["./migrate"] and "Entrypoint" not in migrate.create_body
    assert migrate.depends_on == {"db": SERVICE_STARTED}
    assert every_key.volumes == {"appdata": {
        "Name": "ignored_appdata", "Driver": "local", "External": False,
        "Labels": {"org.example.backup": "daily", "com.docker.compose.project": "ignored",
                   "com.docker.compose.volume": "appdata"}}}
    assert any("version" in w for w in every_key.warnings)


def test_create_body_is_what_the_engine_takes(every_key: ComposeProject) -> None:
    # The body goes to container_config unchanged (named volumes resolved to directories first).
    b = dict(every_key.services["db"].create_body)
    config = runtime_config(b, {"Cmd": ["postgres"], "Env": []}, container_id="c" * 64, rootfs="/r", etc_files={},
                            privileged_caps=[], cgroups_path="corral/db", cgroup_namespace=False)
    assert config["linux"]["resources"]["memory"]["limit"] == 1 << 30
    assert config["linux"]["resources"]["pids"] == {"limit": 200}


def test_defaults_of_a_minimal_service() -> None:
    p = parse("services:\n  web:\n    image: busybox\n")
    web = p.services["web"]
    assert web.container_name == "proj-web-1"
    assert web.create_body == {
        "Image": "busybox", "Env": [],
        "Labels": {"com.docker.compose.project": "proj", "com.docker.compose.service": "web",
                   "com.docker.compose.container-number": "1", "com.docker.compose.oneoff": "False",
                   "com.docker.compose.config-hash": web.config_hash},
        "HostConfig": {"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}},
    }
    assert p.warnings == [] and p.volumes == {}


def test_name_in_the_file_wins_and_is_checked() -> None:
    assert parse("name: other\nservices: {}\n").name == "other"
    with pytest.raises(ComposeError, match="^name: invalid project name 'Bad Name'"):
        parse("name: Bad Name\nservices: {}\n")
    assert normalize_project_name("My App.v2") == "myappv2"
    assert normalize_project_name("_x-Y") == "x-y"


@pytest.mark.parametrize("text, cmd", [
    ("command: echo hi", ["echo", "hi"]),
    ("command: sh -c 'echo \"a b\"'", ["sh", "-c", 'echo "a b"']),
    ("command: [echo, 'a b']", ["echo", "a b"]),
    ("command: []", []),
    ("command: ''", []),
])
def test_command_forms(text: str, cmd: list[str]) -> None:
    assert body(one(text))["Cmd"] == cmd


def test_entrypoint_string_is_split() -> None:
    assert body(one("entrypoint: /bin/sh -c"))["Entrypoint"] == ["/bin/sh", "-c"]


@pytest.mark.parametrize("text, policy", [
    ("restart: no", ("no", 0)),          # YAML 1.1 would read this as False
    ("restart: 'no'", ("no", 0)),
    ("restart: always", ("always", 0)),
    ("restart: unless-stopped", ("unless-stopped", 0)),
    ("restart: on-failure", ("on-failure", 0)),
    ("restart: on-failure:3", ("on-failure", 3)),
])
def test_restart_policies(text: str, policy: tuple[str, int]) -> None:
    name, count = policy
    assert body(one(text))["HostConfig"]["RestartPolicy"] == {"Name": name, "MaximumRetryCount": count}


@pytest.mark.parametrize("text", ["restart: sometimes", "restart: on-failure:x", "restart: always:3", "restart: false"])
def test_bad_restart_policy_is_named(text: str) -> None:
    with pytest.raises(ComposeError, match=r"^services\.s\.restart: "):
        parse(one(text))


def test_environment_mapping_values_become_text() -> None:
    env = body(one("environment: {A: 1, B: 1.5, C: true, D: yes, E: null, F: ''}"), environ={"E": "shell"})["Env"]
    assert env == ["A=1", "B=1.5", "C=true", "D=yes", "E=shell", "F="]


def test_environment_key_without_value_is_omitted_when_unset() -> None:
    assert body(one("environment: [A, B=2]"))["Env"] == ["B=2"]
    assert body(one("environment: {A: null}"))["Env"] == []


def test_labels_list_form_and_reserved_prefix() -> None:
    assert body(one("labels: [a=1, b]"))["Labels"]["a"] == "1"
    assert body(one("labels: [a=1, b]"))["Labels"]["b"] == ""
    with pytest.raises(ComposeError, match=r"^services\.s\.labels: 'com\.docker\.compose\.service' is reserved"):
        parse(one("labels: {com.docker.compose.service: x}"))


def test_healthcheck_disable_and_conflicts() -> None:
    assert body(one("healthcheck: {disable: true}"))["Healthcheck"] == {"Test": ["NONE"]}
    assert body(one("healthcheck: {test: [NONE]}"))["Healthcheck"] == {"Test": ["NONE"]}
    with pytest.raises(ComposeError, match=r"^services\.s\.healthcheck: test and disable cannot both be set"):
        parse(one("healthcheck: {disable: true, test: 'true'}"))
    with pytest.raises(ComposeError, match=r"^services\.s\.healthcheck\.test: a list must start with"):
        parse(one("healthcheck: {test: [curl, x]}"))
    with pytest.raises(ComposeError, match=r"^services\.s\.healthcheck\.interval: must be a duration string"):
        parse(one("healthcheck: {interval: 10}"))
    assert body(one("healthcheck: {start_interval: 2s}"))["Healthcheck"] == {"StartInterval": 2_000_000_000}


def test_stop_grace_period_rounds_up_to_whole_seconds() -> None:
    assert body(one("stop_grace_period: 1500ms"))["StopTimeout"] == 2
    assert body(one("stop_grace_period: 1m30s"))["StopTimeout"] == 90
    assert body(one("stop_grace_period: '0'"))["StopTimeout"] == 0


def test_user_may_be_a_number_and_booleans_may_be_interpolated() -> None:
    b = body(one("user: 1000\nprivileged: ${PRIV:-false}\nread_only: 'TRUE'"))
    assert b["User"] == "1000"
    assert b["HostConfig"]["Privileged"] is False and b["HostConfig"]["ReadonlyRootfs"] is True


def test_memswap_unlimited() -> None:
    assert body(one("mem_limit: 64m\nmemswap_limit: -1"))["HostConfig"]["MemorySwap"] == -1


# -- volumes -----------------------------------------------------------------------------------------


def test_volume_sources_bind_or_named() -> None:
    text = one("volumes: ['../shared:/shared', 'data:/data:ro', '/abs:/abs:rw,z']") + "volumes:\n  data:\n"
    assert body(text)["HostConfig"]["Binds"] == ["/srv/shared:/shared", "proj_data:/data:ro", "/abs:/abs:rw,z"]


def test_named_volume_with_explicit_or_external_name() -> None:
    p = parse(one("volumes: ['a:/a', 'bb:/b']") + "volumes:\n  a: {name: custom}\n  bb: {external: true}\n")
    assert p.services["s"].create_body["HostConfig"]["Binds"] == ["custom:/a", "bb:/b"]
    assert p.volumes["a"]["Name"] == "custom" and p.volumes["bb"]["External"] is True
    with pytest.raises(ComposeError, match=r"^volumes\.a: invalid volume name 'a'"):
        parse("services: {}\nvolumes:\n  a: {external: true}\n")   # Docker wants two characters


@pytest.mark.parametrize("extra, message", [
    ("volumes: ['data:/data']", r"services\.s\.volumes\[0\]: volume 'data' is not declared"),
    ("volumes: ['/data']", r"services\.s\.volumes\[0\]: anonymous volumes are not supported"),
    ("volumes: ['./x:rel']", r"services\.s\.volumes\[0\]: target 'rel' is not an absolute path"),
    ("volumes: ['./x:/x:nocopy']", r"services\.s\.volumes\[0\]: invalid mode 'nocopy'"),
    ("volumes: ['a:b:c:d']", r"services\.s\.volumes\[0\]: invalid volume 'a:b:c:d'"),
    ("volumes: [{type: npipe, target: /x}]", r"services\.s\.volumes\[0\]\.type: must be bind, volume or tmpfs"),
    ("volumes: [{type: bind, target: /x}]", r"services\.s\.volumes\[0\]\.source: required for a bind"),
    ("volumes: [{type: bind, source: /x, target: /x, bind: {}}]", r"services\.s\.volumes\[0\]: unsupported key 'bind'"),
    ("volumes: [{type: volume, target: /x}]", r"services\.s\.volumes\[0\]: anonymous volumes"),
    ("volumes: [42]", r"services\.s\.volumes\[0\]: must be a string or a mapping, got a number"),
    ("volumes: ['~/x:/x']", r"services\.s\.volumes\[0\]: cannot expand '~/x': HOME is not set"),
    ("tmpfs: [run]", r"services\.s\.tmpfs\[0\]: 'run' is not an absolute path"),
    ("volumes: ['./a:/x', '/b:/x']", r"services\.s\.volumes\[1\]: duplicate mount point /x"),
    ("volumes: ['./a:/x']\ntmpfs: /x", r"services\.s\.tmpfs\[0\]: duplicate mount point /x"),
])
def test_bad_volumes_are_named(extra: str, message: str) -> None:
    with pytest.raises(ComposeError, match="^" + message):
        parse(one(extra))


def test_tmpfs_string_form() -> None:
    assert body(one("tmpfs: /run"))["HostConfig"]["Tmpfs"] == {"/run": ""}


def test_top_level_volume_checks() -> None:
    with pytest.raises(ComposeError, match=r"^volumes\.v\.driver: only the 'local' driver"):
        parse("services: {}\nvolumes:\n  v: {driver: nfs}\n")
    with pytest.raises(ComposeError, match=r"^volumes\.v: unsupported key 'driver_opts'"):
        parse("services: {}\nvolumes:\n  v: {driver_opts: {}}\n")


# -- limits ---------------------------------------------------------------------------------------


def test_deploy_limits_equal_to_the_short_form_are_fine() -> None:
    h = body(one("mem_limit: 64m\ndeploy: {resources: {limits: {memory: 64M}}}"))["HostConfig"]
    assert h["Memory"] == 64 << 20


@pytest.mark.parametrize("extra, message", [
    ("mem_limit: 64m\ndeploy: {resources: {limits: {memory: 128m}}}",
     r"mem_limit and deploy\.resources\.limits\.memory conflict \(67108864 != 134217728\)"),
    ("cpus: 1\ndeploy: {resources: {limits: {cpus: '2'}}}", r"cpus and deploy\.resources\.limits\.cpus conflict"),
    ("pids_limit: 10\ndeploy: {resources: {limits: {pids: 20}}}", r"pids_limit and deploy\.resources\.limits\.pids"),
])
def test_deploy_limits_conflicting_with_short_forms(extra: str, message: str) -> None:
    with pytest.raises(ComposeError, match=r"^services\.s: " + message):
        parse(one(extra))


@pytest.mark.parametrize("extra, message", [
    ("mem_limit: lots", r"services\.s\.mem_limit: invalid size 'lots'"),
    ("mem_limit: [1]", r"services\.s\.mem_limit: must be a size like '512m', got a list"),
    ("cpus: 0", r"services\.s\.cpus: invalid value 0"),
    ("cpus: many", r"services\.s\.cpus: invalid value 'many'"),
    ("pids_limit: 1.5", r"services\.s\.pids_limit: must be an integer, got a number"),
    ("deploy: {replicas: 2}", r"services\.s\.deploy: unsupported key 'replicas'"),
    ("deploy: {resources: {reservations: {}}}", r"services\.s\.deploy\.resources: unsupported key 'reservations'"),
    ("deploy: {resources: {limits: {devices: []}}}",
     r"services\.s\.deploy\.resources\.limits: unsupported key 'devices'"),
])
def test_bad_limits_are_named(extra: str, message: str) -> None:
    with pytest.raises(ComposeError, match="^" + message):
        parse(one(extra))


# -- unsupported keys and wrong types ------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    (one("ports: ['8080:80']"), r"services\.s: unsupported key 'ports'"),
    (one("build: ."), r"services\.s: unsupported key 'build'"),
    (one("networks: [default]"), r"services\.s: unsupported key 'networks'"),
    ("services: {}\nnetworks: {}\n", r"compose file: unsupported top-level key 'networks'"),
    ("services: {}\nsecrets: {}\n", r"compose file: unsupported top-level key 'secrets'"),
    ("volumes: {}\n", r"services: required"),
    ("", r"services: required"),
    ("- a\n- b\n", r"compose file: must be a mapping, got a list"),
    ("services: []\n", r"services: must be a mapping, got a list"),
    ("services:\n  s: busybox\n", r"services\.s: must be a mapping, got a string"),
    ("services:\n  s: {command: x}\n", r"services\.s\.image: required"),
    ("services:\n  'bad name': {image: x}\n", r"services\.bad name: invalid service name"),
    ("services:\n  1: {image: x}\n", r"services: key 1 must be a string"),
    (one("image2: x"), r"services\.s: unsupported key 'image2'"),
    (one("command: {a: b}"), r"services\.s\.command: must be a list of strings, got a mapping"),
    (one("command: [sleep, 10]"), r"services\.s\.command\[1\]: must be a string, got a number"),
    (one("command: \"echo 'unclosed\""), r"services\.s\.command: cannot split"),
    (one("environment: 5"), r"services\.s\.environment: must be a list or a mapping, got a number"),
    (one("environment: {A: [1]}"), r"services\.s\.environment\.A: must be a string, number, boolean or null"),
    (one("environment: ['=x']"), r"services\.s\.environment\[0\]: invalid entry '=x'"),
    (one("labels: [1]"), r"services\.s\.labels\[0\]: must be a string, got a number"),
    (one("privileged: 1"), r"services\.s\.privileged: must be true or false, got a number"),
    (one("read_only: yes"), r"services\.s\.read_only: must be true or false, got a string"),
    (one("hostname: [a]"), r"services\.s\.hostname: must be a string, got a list"),
    (one("healthcheck: {retries: -1}"), r"services\.s\.healthcheck\.retries: must not be negative"),
    (one("healthcheck: {test: x, foo: 1}"), r"services\.s\.healthcheck: unsupported key 'foo'"),
    (one("container_name: '-bad'"), r"services\.s\.container_name: invalid container name '-bad'"),
    (one("depends_on: {s2: {condition: service_ready}}"),
     r"services\.s\.depends_on\.s2\.condition: invalid condition 'service_ready'"),
    (one("depends_on: {s2: {restart: true}}"), r"services\.s\.depends_on\.s2: unsupported key 'restart'"),
    (one("depends_on: [a, a]"), r"services\.s\.depends_on: lists a service twice"),
    (one("depends_on: nope"), r"services\.s\.depends_on: must be a mapping, got a string"),
    (one("env_file: 3"), r"services\.s\.env_file: must be a string or a list, got a number"),
    (one("env_file: [{required: false}]"), r"services\.s\.env_file\[0\]\.path: required"),
])
def test_errors_name_the_path(text: str, message: str) -> None:
    with pytest.raises(ComposeError, match="^" + message):
        parse(text)


def test_extension_keys_are_ignored_everywhere() -> None:
    p = parse("x-top: 1\nservices:\n  s:\n    image: busybox\n    x-mine: {anything: [1]}\n")
    assert "x-mine" not in str(p.services["s"].create_body)


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = """\
    x-base: &base
      image: busybox
      restart: always
    services:
      a:
        <<: *base
        restart: "no"
      b: *base
    """
    p = parse(text)
    assert p.services["a"].create_body["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert p.services["b"].create_body["HostConfig"]["RestartPolicy"]["Name"] == "always"


def test_container_names_must_be_unique() -> None:
    with pytest.raises(ComposeError, match=r"^services\.b\.container_name: 'xx' is also the container name of "
                                           r"service 'a'"):
        parse("services:\n  a: {image: i, container_name: xx}\n  b: {image: i, container_name: xx}\n")


# -- malformed and hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("services: [\n", r"invalid YAML at line 2, column 1: "),
    ("services:\n  s: {image: a\n  t: 1\n", r"invalid YAML at line 3"),
    ("a: b: c\n", r"invalid YAML at line 1, column 5: mapping values are not allowed here"),
    ("services: {}\nservices: {}\n", r"invalid YAML at line 2, column 1: found duplicate key 'services'"),
    ("services: {}\n---\nservices: {}\n", r"invalid YAML at line 2, column 1: but found another document"),
    ("x: !!python/object/apply:os.system ['true']\n", r"invalid YAML at line 1, column 4: could not determine"),
    ("x: *nowhere\n", r"invalid YAML at line 1, column 4: found undefined alias"),
])
def test_malformed_yaml_is_a_compose_error(text: str, message: str) -> None:
    with pytest.raises(ComposeError, match="^" + message) as info:
        parse(text)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no yaml exception leaks through


def test_size_bound() -> None:
    text = "services: {}\n" + "#" * 100 + "\n"
    parse(text, max_bytes=len(text))
    with pytest.raises(ComposeError, match=r"^compose file of 114 bytes exceeds the limit of 113"):
        parse(text, max_bytes=len(text) - 1)
    with pytest.raises(ComposeError, match="exceeds the limit of 1048576"):
        parse("services: {}\n" + "#" * (1 << 20))


def test_billion_laughs_is_bounded() -> None:
    with pytest.raises(ComposeError, match=r"^compose file expands to more than 100000 values"):
        parse_compose((FIXTURES / "billion-laughs.yaml").read_text(), project="p", base_dir=BASE)


def test_recursive_and_deep_documents_are_bounded() -> None:
    with pytest.raises(ComposeError, match="nested more than 64 levels deep|expands to more than"):
        parse("x-loop: &loop [*loop]\nservices: {}\n")
    with pytest.raises(ComposeError, match="nested"):
        parse("x-deep: " + "[" * 100 + "]" * 100 + "\nservices: {}\n")
    with pytest.raises(ComposeError, match="^invalid YAML: nested too deeply|nested more than"):
        parse("x-deep: " + "[" * 50_000 + "]" * 50_000 + "\nservices: {}\n")


def test_base_dir_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="base_dir must be absolute"):
        parse_compose("services: {}", project="p", base_dir="rel")


# -- durations -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, ns", [
    ("0", 0),
    ("10s", 10_000_000_000),
    ("1m30s", 90_000_000_000),
    ("1h", 3_600_000_000_000),
    ("1h2m3s", 3_723_000_000_000),
    ("500ms", 500_000_000),
    ("1.5s", 1_500_000_000),
    ("1.1s", 1_100_000_000),          # exact, no float rounding
    (".5m", 30_000_000_000),
    ("2us", 2_000),
    ("2µs", 2_000),
    ("7ns", 7),
    ("1s500ms", 1_500_000_000),
    (" 5s ", 5_000_000_000),
])
def test_durations(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns


@pytest.mark.parametrize("value", ["", "10", "s", "1d", "-5s", "1m 30s", "1.s.", "5 s", 10, 1.5, None, True])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ComposeError, match=r"^f\.g: "):
        parse_duration_ns(value, where="f.g")


# -- interpolation ---------------------------------------------------------------------------------------

ENV = {"SET": "value", "EMPTY": "", "OTHER": "other"}


@pytest.mark.parametrize("text, result", [
    ("plain", "plain"),
    ("$SET", "value"),
    ("${SET}", "value"),
    ("a${SET}b", "avalueb"),
    ("$SET.txt", "value.txt"),
    ("$SET_x", ""),                    # the name runs as far as it can
    ("${SET}_x", "value_x"),
    ("$$SET", "$SET"),                 # escape
    ("$$$SET", "$value"),
    ("$$$$", "$$"),
    ("cost: $5", "cost: $5"),          # not a name: stays
    ("end$", "end$"),
    ("$ {SET}", "$ {SET}"),
    ("${UNSET}", ""),
    ("${UNSET:-dflt}", "dflt"),
    ("${EMPTY:-dflt}", "dflt"),
    ("${EMPTY-dflt}", ""),             # set (to empty): no default without ':'
    ("${UNSET-dflt}", "dflt"),
    ("${SET:-dflt}", "value"),
    ("${UNSET:-}", ""),
    ("${UNSET:-a b:c}", "a b:c"),
    ("${UNSET:-${OTHER}}", "other"),   # nested default
    ("${UNSET:-${UNSET2:-deep}}", "deep"),
    ("${UNSET:-$$}", "$"),
    ("${SET:+alt}", "alt"),
    ("${EMPTY:+alt}", ""),
    ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""),
    ("${SET:?boom}", "value"),
    ("${EMPTY?boom}", ""),
    ("${set}", ""),                    # names are case-sensitive
])
def test_interpolation(text: str, result: str) -> None:
    assert interpolate(text, ENV.get) == result


@pytest.mark.parametrize("text, message", [
    ("${", r"invalid interpolation format '\$\{'"),
    ("${}", "invalid interpolation format"),
    ("${SET", "invalid interpolation format"),
    ("${1X}", "invalid interpolation format"),
    ("${SET:x}", "invalid interpolation format"),
    ("${SET SET}", "invalid interpolation format"),
    ("${UNSET:-unterminated", "invalid interpolation format"),
    ("${UNSET:?need it}", "required variable UNSET is missing a value: need it"),
    ("${EMPTY:?}", "required variable EMPTY is missing a value$"),
    ("${UNSET?}", "required variable UNSET is missing a value$"),
])
def test_bad_interpolation(text: str, message: str) -> None:
    with pytest.raises(ComposeError, match=r"^services\.s\.image: " + message):
        interpolate(text, ENV.get, where="services.s.image")


def test_unset_variables_warn_once() -> None:
    p = parse(one("command: echo $A ${A} ${B:-x} $C\nworking_dir: /$C"))
    assert p.services["s"].create_body["Cmd"] == ["echo", "x"]
    assert p.warnings == ['the "A" variable is not set, defaulting to a blank string',
                          'the "C" variable is not set, defaulting to a blank string']


def test_interpolation_in_the_document() -> None:
    text = textwrap.dedent("""\
        services:
          s:
            image: ${REGISTRY:-docker.io}/app:${TAG:?set TAG}
            environment: {HOME_DIR: $HOME, "$$KEY": "$${literal}"}
            mem_limit: ${MEM:-32m}
            pids_limit: ${PIDS:-16}
        """)
    b = body(text, environ={"TAG": "1.0", "HOME": "/root"})
    assert b["Image"] == "docker.io/app:1.0"
    assert b["Env"] == ["$$KEY=${literal}", "HOME_DIR=/root"]   # keys are never interpolated
    assert b["HostConfig"]["Memory"] == 32 << 20 and b["HostConfig"]["PidsLimit"] == 16
    with pytest.raises(ComposeError, match=r"^services\.s\.image: required variable TAG is missing a value: set TAG"):
        parse(text)


# -- env files ---------------------------------------------------------------------------------------------


def test_env_file_format() -> None:
    text = textwrap.dedent("""\
        # a comment
        PLAIN=value
        SPACED = spaced out   # trailing comment
        export EXPORTED=1
        SINGLE='no $SET interpolation # here'
        DOUBLE="line\\nbreak \\"q\\" $SET"
        HASH=a#b
        EMPTY=
        REF=${PLAIN}-${SET}
        FROM_ENV
        NOT_IN_ENV

        URL=http://x/?a=b
    """)
    env = parse_env_file(text, lookup={"SET": "s", "FROM_ENV": "e"}.get)
    assert env == {"PLAIN": "value", "SPACED": "spaced out", "EXPORTED": "1",
                   "SINGLE": "no $SET interpolation # here", "DOUBLE": 'line\nbreak "q" s', "HASH": "a#b",
                   "EMPTY": "", "REF": "value-s", "FROM_ENV": "e", "URL": "http://x/?a=b"}


@pytest.mark.parametrize("text, message", [
    ("A='open", r"^f\.env:1: unterminated single quote"),
    ('\nA="open', r"^f\.env:2: unterminated double quote"),
    ("A='x' y", r"^f\.env:1: unexpected 'y' after the quoted value"),
    ("BAD KEY=1", r"^f\.env:1: invalid variable name 'BAD KEY'"),
    ("=1", r"^f\.env:1: invalid variable name ''"),
])
def test_bad_env_file_lines(text: str, message: str) -> None:
    with pytest.raises(ComposeError, match=message):
        parse_env_file(text, where="f.env")


def test_env_file_precedence() -> None:
    # Later env files override earlier ones; `environment` overrides them all.
    text = one("env_file: [a.env, ./sub/b.env]\nenvironment: {C: from-environment}")
    files = {f"{BASE}/a.env": "A=a\nB=a\nC=a\n", f"{BASE}/sub/b.env": "B=b\nC=b\n"}
    assert body(text, env_files=files)["Env"] == ["A=a", "B=b", "C=from-environment"]


def test_env_file_missing_and_optional() -> None:
    with pytest.raises(ComposeError, match=r"^services\.s\.env_file: env file /srv/proj/\.env not found"):
        parse(one("env_file: .env"))
    with pytest.raises(ComposeError, match=r"^services\.s\.env_file\[1\]: env file /etc/x\.env not found"):
        parse(one("env_file: [.env, /etc/x.env]"), env_files={f"{BASE}/.env": ""})
    assert body(one("env_file: [{path: .env, required: false}]"))["Env"] == []


def test_env_file_bare_key_keeps_file_value_when_environment_key_is_unset() -> None:
    text = one("env_file: .env\nenvironment: [A]")
    assert body(text, env_files={f"{BASE}/.env": "A=file"})["Env"] == ["A=file"]
    assert body(text, env_files={f"{BASE}/.env": "A=file"}, environ={"A": "shell"})["Env"] == ["A=shell"]


def test_referenced_env_files() -> None:
    text = textwrap.dedent("""\
        services:
          a: {image: i, env_file: [.env, "${CONF:-conf}/a.env"]}
          b: {image: i, env_file: [{path: /abs.env, required: false}, ./.env]}
    """)
    assert referenced_env_files(text, base_dir=BASE, environ={"CONF": "/etc"}) == [
        f"{BASE}/.env", "/etc/a.env", "/abs.env"]


# -- start order -----------------------------------------------------------------------------------------


def test_start_order_layers(every_key: ComposeProject) -> None:
    assert start_order(every_key) == [["db"], ["migrate"], ["app"]]
    p = parse("""\
    services:
      web: {image: i, depends_on: [db, cache]}
      worker: {image: i, depends_on: {db: {condition: service_healthy}}}
      db: {image: i}
      cache: {image: i}
      proxy: {image: i, depends_on: [web]}
      lone: {image: i}
    """)
    assert start_order(p) == [["cache", "db", "lone"], ["web", "worker"], ["proxy"]]
    assert start_order(ComposeProject("p", {}, {})) == []


def test_cycle_is_named() -> None:
    with pytest.raises(ComposeError, match=r"^services: dependency cycle a -> b -> c -> a$"):
        parse_compose((FIXTURES / "cycle.yaml").read_text(), project="p", base_dir=BASE)
    with pytest.raises(ComposeError, match=r"^services: dependency cycle s -> s$"):
        parse(one("depends_on: [s]"))


def test_unknown_dependency() -> None:
    with pytest.raises(ComposeError, match=r"^services\.s\.depends_on: unknown service 'ghost'"):
        parse(one("depends_on: [ghost]"))


def test_start_order_checks_projects_built_by_hand() -> None:
    p = parse("services:\n  a: {image: i}\n  b: {image: i}\n")
    looped = dataclasses.replace(p, services={
        "a": dataclasses.replace(p.services["a"], depends_on={"b": SERVICE_STARTED}),
        "b": dataclasses.replace(p.services["b"], depends_on={"a": SERVICE_STARTED}),
    })
    with pytest.raises(ComposeError, match="dependency cycle a -> b -> a"):
        start_order(looped)
    with pytest.raises(ComposeError, match="unknown service 'z'"):
        start_order(dataclasses.replace(p, services={
            "a": dataclasses.replace(p.services["a"], depends_on={"z": SERVICE_STARTED})}))


# -- hashes and plans -----------------------------------------------------------------------------------------

V1 = """\
services:
  db: {image: postgres, environment: [A=1, B=2]}
  web: {image: nginx, depends_on: [db]}
  old: {image: busybox, depends_on: [web]}
  leaf: {image: busybox, depends_on: [old]}
"""


def test_config_hash_ignores_form_but_sees_content() -> None:
    base = parse(V1).services
    same = parse(V1.replace("environment: [A=1, B=2]", "environment: {B: '2', A: 1}")).services
    assert base["db"].config_hash == same["db"].config_hash
    changed = parse(V1.replace("A=1", "A=3")).services
    assert base["db"].config_hash != changed["db"].config_hash
    # depends_on alone does not recreate (Compose's ServiceHash leaves it out too).
    assert parse(V1.replace("depends_on: [db]", "")).services["web"].config_hash == base["web"].config_hash
    # An env_file's contents or an interpolated variable are part of what the container sees.
    text = one("env_file: .env\ncommand: echo $X")
    h1 = parse(text, env_files={f"{BASE}/.env": "A=1"}).services["s"].config_hash
    assert parse(text, env_files={f"{BASE}/.env": "A=2"}).services["s"].config_hash != h1
    assert parse(text, env_files={f"{BASE}/.env": "A=1"}, environ={"X": "1"}).services["s"].config_hash != h1
    assert len(h1) == 64 and int(h1, 16) >= 0


def test_diff_first_up_creates_everything_in_start_order() -> None:
    new = parse(V1)
    assert diff(None, new) == Plan(create=["db", "web", "old", "leaf"], recreate=[], remove=[], unchanged=[])


def test_diff_create_recreate_remove_unchanged() -> None:
    old = parse(V1)
    new = parse("""\
    services:
      db: {image: postgres, environment: [A=1, B=2]}
      web: {image: nginx:1.27, depends_on: [db]}
      api: {image: api, depends_on: [db]}
    """)
    assert diff(old, new) == Plan(create=["api"], recreate=["web"], remove=["leaf", "old"], unchanged=["db"])
    assert diff(new, new) == Plan(create=[], recreate=[], remove=[], unchanged=["db", "api", "web"])


def test_diff_on_rename_of_the_project_recreates() -> None:
    old = parse(V1)
    new = parse(V1, project="renamed")
    assert diff(old, new).recreate == ["db", "web", "old", "leaf"]


# -- the example -----------------------------------------------------------------------------------------------


def test_example_file_parses() -> None:
    p = parse_compose((ROOT / "examples" / "compose.yaml").read_text(), project="examples",
                      base_dir=str(ROOT / "examples"))
    assert p.warnings == []
    assert set(p.services) == {"web", "worker", "cache"}
    web, worker, cache = p.services["web"], p.services["worker"], p.services["cache"]
    assert web.create_body["Image"] == "busybox:latest"
    assert web.create_body["Cmd"][:2] == ["sh", "-c"] and "httpd -f -p 8080 -h /www" in web.create_body["Cmd"][2]
    assert worker.depends_on == {"web": SERVICE_STARTED}
    assert worker.create_body["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    assert "$((RANDOM" in worker.create_body["Cmd"][2]     # `$$` reached the container's shell as `$`
    assert cache.create_body["HostConfig"]["Memory"] == 32 << 20
    assert cache.create_body["HostConfig"]["PidsLimit"] == 16
    assert all(s.create_body.get("StopTimeout") for s in p.services.values())
    assert start_order(p) == [["cache", "web"], ["worker"]]
