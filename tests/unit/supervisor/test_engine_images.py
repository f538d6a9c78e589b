"""The pure parts of the Engine's image verbs: ``docker import --change`` parsing and
the image inspect document. The verbs themselves run in tests/integration/test_daemon_images.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.oci_image import ContainerConfig, ImageConfig
from runtime.images import Image
from supervisor.engine import image_inspect_document, parse_changes
from supervisor.errors import InvalidRequest


def test_no_changes_is_the_empty_config() -> None:
    assert parse_changes([]) == ContainerConfig()


def test_cmd_and_entrypoint_exec_and_shell_forms() -> None:
    c = parse_changes(['CMD ["cat", "/marker"]', "ENTRYPOINT /bin/run --fast"])
    assert c.cmd == ("cat", "/marker")
    assert c.entrypoint == ("/bin/sh", "-c", "/bin/run --fast")
    # Not valid JSON (single quotes): shell form, as the Dockerfile parser reads it.
    assert parse_changes(["cmd ['sh']"]).cmd == ("/bin/sh", "-c", "['sh']")
    assert parse_changes(['CMD []']).cmd == ()


def test_env_forms_and_override() -> None:
    c = parse_changes(['ENV A=1 B="two words"', "ENV C legacy form value", "ENV A=3"])
    assert c.env == ("B=two words", "C=legacy form value", "A=3")
    base = ContainerConfig(env=("PATH=/bin",))
    assert parse_changes(["ENV PATH=/usr/bin"], base).env == ("PATH=/usr/bin",)


def test_workdir_user_labels_ports_volumes_stopsignal() -> None:
    c = parse_changes(["WORKDIR /app", "WORKDIR sub/../data", "USER 1000:1000", 'LABEL a=b "c d"=e',
                       "EXPOSE 80 53/udp", 'VOLUME ["/v1"]', "VOLUME /v2 /v3", "STOPSIGNAL SIGINT"])
    assert c.working_dir == "/app/data"
    assert c.user == "1000:1000"
    assert c.labels == {"a": "b", "c d": "e"}
    assert c.exposed_ports == ("53/udp", "80/tcp")
    assert c.volumes == ("/v1", "/v2", "/v3")
    assert c.stop_signal == "SIGINT"


@pytest.mark.parametrize(("change", "message"), [
    ("RUN make", "'RUN' is not a valid change command"),
    ("FROM scratch", "is not a valid change command"),
    ("CMD", "requires at least one argument"),
    ("ENV A", "needs a value"),
    ('ENV A="unterminated', "No closing quotation"),
    ("LABEL a=b =c", "is not KEY=VALUE"),
])
def test_bad_changes(change: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_changes([change])


def test_changes_must_be_strings() -> None:
    with pytest.raises(InvalidRequest):
        parse_changes("CMD sh")          # type: ignore[arg-type]


def test_inspect_document_shape() -> None:
    config = ContainerConfig(env=("PATH=/bin",), cmd=("sh",), labels={"k": "v"})
    diff_ids = ("sha256:" + "a" * 64,)
    image = Image(
        id="sha256:" + "b" * 64, repo_tags=("busybox:latest",), created="2024-01-02T03:04:05Z", size=1234,
        diff_ids=diff_ids, chain_ids=diff_ids, config=config,
        image_config=ImageConfig(architecture="amd64", os="linux", diff_ids=diff_ids, config=config,
                                 created="2024-01-02T03:04:05Z", history=({"comment": "Imported from -"},)),
        manifest_digest="sha256:" + "c" * 64, layer_dirs=(Path("/data/snapshots/" + "a" * 64),),
    )
    doc = image_inspect_document(image)
    assert doc["Id"] == image.id and doc["RepoTags"] == ["busybox:latest"]
    assert doc["Created"] == "2024-01-02T03:04:05Z" and doc["Size"] == 1234
    assert (doc["Architecture"], doc["Os"], doc["Comment"]) == ("amd64", "linux", "Imported from -")
    assert doc["RootFS"] == {"Type": "layers", "Layers": list(diff_ids)}
    assert doc["Config"] == {"User": "", "Env": ["PATH=/bin"], "Cmd": ["sh"], "Entrypoint": None,
                             "WorkingDir": "", "Labels": {"k": "v"}, "ExposedPorts": None, "Volumes": None}
