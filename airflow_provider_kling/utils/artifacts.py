"""The files a generation leaves behind: video file names, the ``<video>.kling.json`` sidecars (read,
written whole, judged reusable), finding a video already made from the same request
(``skip_existing``), downloading a completed generation with its sidecar, and the lasting links to
stored videos.

Used by the single operators and by the batch package. Only names load here: the hook's destination
and download helpers load when a function runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_kling.utils.results import model_from_id

if TYPE_CHECKING:
    from airflow_provider_kling.hooks.kling import KlingHook
    from airflow_provider_kling.schemas.generation import Generation


def video_file_name(generation_id: str) -> str:
    """``<id>.mp4``, without the model path that ``<uuid>:<model>`` ids carry.

    :param generation_id: the generation's id as the service gave it.
    """
    from airflow_provider_kling.utils.storage import safe_file_name

    head = generation_id.partition(":")[0] if model_from_id(generation_id) else generation_id
    return f"{safe_file_name(head)}.mp4"


def stored_video_link(video_path: str) -> str | None:
    """A link to a downloaded video that outlives the service's signed URL: the storage console's page
    for s3:// and gs:// objects; None for other destinations (the service's URL stays the link).

    :param video_path: where the video was stored (a local path or an object storage URL).
    """
    from urllib.parse import quote, urlsplit

    parts = urlsplit(video_path)
    key = parts.path.lstrip("/")
    if parts.scheme in ("s3", "s3a"):
        return f"https://s3.console.aws.amazon.com/s3/object/{parts.netloc}?prefix={quote(key)}"
    if parts.scheme in ("gs", "gcs"):
        return f"https://console.cloud.google.com/storage/browser/_details/{parts.netloc}/{quote(key)}"
    return None


def sidecar_path(target: Any) -> Any:
    """Where the small JSON describing a downloaded video lives: ``<video>.kling.json`` beside it.

    :param target: the video (a Path or ObjectStoragePath).
    """
    return target.parent / f"{target.name}.kling.json"


def find_existing_video(
    destination: Any, fingerprint: str, log: Any = None, *, base_url: str | None = None
) -> tuple[Any, dict[str, Any]] | None:
    """The video at ``destination`` made from the request with this fingerprint, and its sidecar.

    A file destination is checked alone; a folder's ``*.kling.json`` sidecars are read (small) until
    one names the fingerprint. The video must exist with the size its sidecar recorded.

    :param destination: the task's ``download_to`` (a folder or a file; local or object storage).
    :param fingerprint: the request's hash.
    :param log: where to say why a folder could not be listed or a video is not reused.
    :param base_url: the service the task calls (the connection's base URL): when given, only a video
        whose sidecar names this same base URL is returned (see :func:`sidecar_reusable`).
    """
    from airflow_provider_kling.utils.storage import resolve_destination

    probe = "kling-destination-probe.mp4"
    target = resolve_destination(destination, probe)
    if target.name != probe:
        candidates = [target]
    else:
        folder = target.parent
        try:
            candidates = sorted(
                (
                    folder / p.name[: -len(".kling.json")]
                    for p in folder.iterdir()
                    if p.name.endswith(".kling.json")
                ),
                key=str,
            )
        except (FileNotFoundError, NotADirectoryError):
            return None
        except Exception as exc:
            if log is not None:
                log.warning("Could not list %s for skip_existing (%s): generating anew", folder, exc)
            return None
    for video in candidates:
        record = read_sidecar(video)
        if record is None or not sidecar_reusable(record, fingerprint, base_url, video=video, log=log):
            continue
        try:
            size = video.stat().st_size
        except Exception:
            continue
        if size == record.get("file_size"):
            return video, record
    return None


def sidecar_reusable(
    record: dict[str, Any], fingerprint: str, base_url: str | None, *, video: Any = None, log: Any = None
) -> bool:
    """Whether a video's sidecar lets ``skip_existing`` reuse it for this request and service.

    The request hash must match. A sidecar naming another service (the emulator, a staging host) is
    never reused. One without a service (written by an earlier version of the provider) is reused
    with a warning: refusing it would bill every such video once more after an upgrade.

    :param record: the sidecar's content.
    :param fingerprint: the request's hash.
    :param base_url: the service the task calls (the connection's base URL); None skips that check.
    :param video: the video, for log lines.
    :param log: where to say why a video is or is not reused.
    """
    if record.get("request") != fingerprint:
        return False
    recorded = record.get("base_url")
    if base_url is None or recorded == base_url:
        return True
    if recorded:
        if log is not None:
            log.info(
                "%s is from the same request but was made at %s, not %s: not reused (skip_existing)",
                video,
                recorded,
                base_url,
            )
        return False
    if log is not None:
        log.warning(
            "%s was made from the same request by an earlier release that did not record its service: "
            "reused as made at %s (delete its .kling.json sidecar to generate it again)",
            video,
            base_url,
        )
    return True


def read_sidecar(target: Any) -> dict[str, Any] | None:
    """The sidecar of video ``target`` (its first 64 KiB), or None when missing or not a JSON object.

    :param target: the video (a Path or ObjectStoragePath).
    """
    import json

    try:
        with sidecar_path(target).open("rb") as handle:
            data = json.loads(handle.read(64 * 1024))
    except Exception:
        return None
    return data if isinstance(data, dict) else None


def download(
    hook: KlingHook,
    generation: Generation,
    destination: Any,
    overwrite: bool,
    *,
    sidecar: dict[str, Any] | None = None,
) -> str:
    """Download a completed generation's video (``<id>.mp4`` inside a folder) and write its sidecar.

    The sidecar (``<video>.kling.json``) records the generation id, model, request hash, service, size
    and usage; it is written whole or not at all (see :func:`write_sidecar`).

    A file that an earlier try of the same generation already downloaded is kept as it is, so a retry
    after a successful download succeeds: when its sidecar names the same generation and size, or when
    it has no readable sidecar but is named after this generation (``<id>.mp4``) and has the size the
    service announced (the earlier try stopped between the video and its sidecar). Any other existing
    file is refused unless ``overwrite``.

    :param hook: the hook whose connection downloads the video.
    :param generation: the completed generation (with its video URL).
    :param destination: a folder (the video is ``<id>.mp4`` inside) or a file; local or object storage.
    :param overwrite: replace an existing file.
    :param sidecar: fields recorded in the sidecar (model, request hash, service...).
    :return: the stored video's path or URL.
    """
    from airflow_provider_kling.utils.storage import resolve_destination

    assert generation.video_url
    name = video_file_name(generation.id)
    target = resolve_destination(destination, name)
    if not overwrite and target.exists():
        earlier = read_sidecar(target)
        size = target.stat().st_size
        if earlier is not None:
            if (
                earlier.get("generation_id") == generation.id
                and earlier.get("file_size") == size
                and generation.file_size in (None, size)
            ):
                hook.log.info(
                    "%s was downloaded by an earlier try of generation %s; kept", target, generation.id
                )
                return str(target)
        elif target.name == name and generation.file_size in (None, size):
            # Only whole videos are moved into place, and this name is this generation's own.
            hook.log.warning(
                "%s was downloaded by an earlier try of generation %s that stopped before writing its "
                "sidecar; kept, and its sidecar written",
                target,
                generation.id,
            )
            write_sidecar(target, _sidecar_record(generation, sidecar, size))
            return str(target)
    path = hook.download_video(
        generation.video_url,
        target,
        file_name=name,
        expected_size=generation.file_size,
        overwrite=overwrite,
    )
    written = resolve_destination(path, name)
    write_sidecar(written, _sidecar_record(generation, sidecar, written.stat().st_size))
    return path


def _sidecar_record(generation: Generation, sidecar: dict[str, Any] | None, size: int) -> dict[str, Any]:
    return {
        "model": model_from_id(generation.id),
        **(sidecar or {}),
        "generation_id": generation.id,
        "file_size": size,
        "usage": generation.usage,
    }


def write_sidecar(video: Any, record: dict[str, Any]) -> None:
    """Write ``video``'s sidecar whole or not at all: a crash never leaves a truncated one.

    Through :func:`~airflow_provider_kling.utils.storage.write_atomic`: a temporary file renamed into
    place locally, one PUT on object storage.

    :param video: the video the sidecar describes (a Path or ObjectStoragePath).
    :param record: the sidecar's content.
    """
    import json

    from airflow_provider_kling.utils.storage import write_atomic

    write_atomic(sidecar_path(video), json.dumps(record).encode())
