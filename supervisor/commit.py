"""``docker commit`` for the Engine: a container's upper dir as one more layer on its image.

The packing is ``ImageStore.commit`` in a worker thread (``layers.pack_directory``
with ``whiteouts``: overlay's 0/0 character devices and opaque directories
become ``.wh.<name>`` and ``.wh..wh..opq``). This module decides what the
image says and keeps the container still while it is read.

Rules:

1. The new config is the image's, with the ``-c`` changes applied
   (``engine.parse_changes``, the same as ``import --change``). SPEC: Docker
   starts from the container's own config (its command as run); we start from
   the image's, so a commit of ``run busybox sh -c '...'`` keeps busybox's CMD.
2. A running container is frozen (cgroup freezer) while its upper dir is packed,
   unless ``pause`` is false, and thawed whatever happens; one the user paused
   stays paused.
3. The runtime's bind-mount targets (``/etc/hostname``, ``/etc/hosts``,
   ``/etc/resolv.conf``), created in the upper dir to mount on, are left out,
   as Docker keeps them in a layer it never commits.
4. Events are Docker's: ``commit`` on the container (``comment``, ``imageID``,
   ``imageRef``), and ``tag`` on the image when it is named.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from protocols.oci_image import ImageFormatError
from runtime.errors import HostError
from runtime.images import ImageError, ImageNotFound

from .errors import InvalidRequest, NoSuchImage
from .files import RUNTIME_PATHS

if TYPE_CHECKING:
    from .engine import Engine


def runtime_layer_paths() -> frozenset[str]:
    """Rule 3, as entry names of the upper dir (``etc/hostname``)."""
    return frozenset(p.lstrip("/") for p in RUNTIME_PATHS)


async def commit_container(engine: Engine, ref: str, *, reference: str | None = None, author: str = "",
                           message: str = "", changes: list[str] | None = None,
                           pause: bool = True) -> dict[str, Any]:
    """docker commit (POST /commit): ``{"Id": "sha256:..."}``.

    Raises:
        NoSuchContainer; NoSuchImage: the container's image is gone;
        InvalidRequest: a bad reference or change, or an upper dir that cannot be packed.
    """
    from .engine import _familiar, parse_changes

    e = engine._get(ref)
    tag = _familiar(reference) if reference else None         # a bad reference fails before any work
    try:
        image = await trio.to_thread.run_sync(engine.images.get, e.image_id)
    except ImageNotFound:
        raise NoSuchImage(f"no such image: {e.image_id}") from None
    config = parse_changes(changes or [], image.config)
    upper = Path(e.dir) / "upper"
    frozen = False
    try:
        if pause and e.running and not e.paused:
            await engine.host.freeze(e.sup.cgroup, True)
            frozen = True

        def work():
            try:
                return engine.images.commit(
                    e.image_id, upper, reference, config=config, author=author, whiteouts=True,
                    exclude=runtime_layer_paths(), extra={"container": e.sup.id},
                    history={"created_by": " ".join(e.sup.config.get("process", {}).get("args", [])),
                             **({"comment": message} if message else {}), **({"author": author} if author else {})})
            except ImageNotFound:
                raise NoSuchImage(f"no such image: {e.image_id}") from None
            except (ImageError, ImageFormatError) as exc:
                raise InvalidRequest(f"commit {e.sup.id[:12]}: {exc}") from None
            except (HostError, OSError) as exc:
                raise InvalidRequest(f"commit {e.sup.id[:12]}: cannot pack its files: {exc}") from None

        new = await trio.to_thread.run_sync(work)
    finally:
        if frozen:
            with trio.CancelScope(shield=True):
                await engine.host.freeze(e.sup.cgroup, False)
    await engine._publish("commit", e.sup, {"comment": message, "imageID": new.id, "imageRef": tag or ""})
    if tag is not None:
        await engine.bus.publish("image", "tag", new.id, {"name": tag})
    return {"Id": new.id}
