"""OpenLineage facets of a Kling generation (imported only by the operators' lineage methods).

Inputs are the images, videos and audio a request names (URL or object-storage path, never the
query string of a signed URL; inline Base64 data is not a dataset); the output is the downloaded
video's storage path (the service's expiring signed URL never appears); the run carries the
generation id, model and usage.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attr
from airflow.providers.common.compat.openlineage.facet import Dataset, ExternalQueryRunFacet, RunFacet
from airflow.providers.openlineage.extractors import OperatorLineage

#: Fields whose values are media inputs (besides image fields, found from the catalog).
MEDIA_FIELDS = ("audio_url", "video_url")


@attr.define
class KlingGenerationRunFacet(RunFacet):
    """The generation behind a task run: its id, model, endpoint and what the service billed.

    :param generationId: the service's generation id.
    :param model: the Kling model id.
    :param endpoint: ``legacy`` or ``unified``.
    :param usage: the service's usage block (tokens_used, credits_used, usd_spent).
    """

    generationId: str  # camelCase, as OpenLineage facets are
    model: str | None = None
    endpoint: str | None = None
    usage: dict[str, Any] = attr.field(factory=dict)


def dataset(location: str) -> Dataset | None:
    """The OpenLineage dataset a URL or path names (OpenLineage naming), None for inline data."""
    location = str(location).strip()
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return Dataset(namespace=f"{scheme}://{parts.netloc.rsplit('@', 1)[-1]}", name=parts.path or "/")
    if scheme in ("", "file"):
        return Dataset(namespace="file", name=location.removeprefix("file://"))
    if scheme == "data":
        return None
    return Dataset(namespace=f"{scheme}://{parts.netloc}", name=parts.path.lstrip("/"))


def media_locations(fields: dict[str, Any]) -> list[str]:
    """Every media input of a validated request's fields, in field order."""
    from airflow_provider_kling.schemas.file_inputs import _image_slots

    found = [container[key] for _, container, key in _image_slots(fields)]
    for name in MEDIA_FIELDS:
        if isinstance(fields.get(name), str):
            found.append(fields[name])
    for element in fields.get("elements") or []:
        if isinstance(element, dict) and isinstance(element.get("video_url"), str):
            found.append(element["video_url"])
    return [str(f) for f in found if isinstance(f, (str,)) or hasattr(f, "fs")]


def operator_lineage(
    fields: dict[str, Any],
    result: dict[str, Any] | None,
    generation_id: str | None,
    model: str | None,
) -> OperatorLineage:
    """Inputs, output and run facets of one task's generation."""
    inputs = [d for d in (dataset(loc) for loc in media_locations(fields)) if d is not None]
    outputs = []
    if result and result.get("video_path"):
        output = dataset(str(result["video_path"]))
        if output is not None:
            outputs.append(output)
    run_facets: dict[str, Any] = {}
    generation_id = (result or {}).get("generation_id") or generation_id
    if generation_id:
        run_facets["externalQuery"] = ExternalQueryRunFacet(externalQueryId=generation_id, source="kling")
        run_facets["kling_generation"] = KlingGenerationRunFacet(
            generationId=generation_id,
            model=model,
            endpoint=(result or {}).get("endpoint"),
            usage=dict((result or {}).get("usage") or {}),
        )
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets)


def task_lineage(operator: Any) -> OperatorLineage:
    """The lineage of a single-video Kling task: its inputs as the user named them (``s3://...``, a
    path; not the data URIs sent), its downloaded video and its generation.

    :param operator: the :class:`~airflow_provider_kling.operators.base.KlingBaseVideoOperator`.
    """
    from airflow_provider_kling.schemas.request import build_request

    try:
        fields = build_request(
            operator.request_fields(), check_capabilities=operator.check_capabilities, kind=operator.kind
        ).fields
    except Exception:
        fields = {}
    return operator_lineage(
        fields, getattr(operator, "_result", None), getattr(operator, "_generation_id", None), operator.model
    )
