"""Operators that generate video clips with Kling: image-to-video, text-to-video, and any other model.

Imported at every DAG parse: only Airflow's own bases load here; the hook, its HTTP clients, the
model catalog and the request validators load when a task runs.

What the operators share lives in :mod:`~airflow_provider_kling.operators.base`, the batch operator
in :mod:`~airflow_provider_kling.operators.batch`, result dicts and event handling in
:mod:`~airflow_provider_kling.utils.results`, files and sidecars in
:mod:`~airflow_provider_kling.utils.artifacts`. Their names stay importable from here, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_kling.links.kling import VIDEO_URL_XCOM_KEY
from airflow_provider_kling.operators.base import (
    DEFAULT_MODEL,
    DEFAULT_TEXT_MODEL,
    GENERATION_ID_STATE_KEY,
    GENERATION_ID_XCOM_KEY,
    RESUME_XCOM_KEY,
    KlingBaseVideoOperator,
)
from airflow_provider_kling.operators.batch import KlingBatchVideoOperator
from airflow_provider_kling.utils.artifacts import (
    download,
    find_existing_video,
    sidecar_path,
    sidecar_reusable,
    stored_video_link,
    video_file_name,
)
from airflow_provider_kling.utils.results import (
    CREDITS_PER_USD,
    RESULT_KEYS,
    annotate_outlets,
    describe_usage,
    fail_fast,
    generation_from_event,
    model_from_id,
    result_dict,
    timeout_seconds,
)

__all__ = [
    "CREDITS_PER_USD",
    "DEFAULT_MODEL",
    "DEFAULT_TEXT_MODEL",
    "GENERATION_ID_STATE_KEY",
    "GENERATION_ID_XCOM_KEY",
    "RESULT_KEYS",
    "RESUME_XCOM_KEY",
    "TYPE_CHECKING",
    "VIDEO_URL_XCOM_KEY",
    "KlingBaseVideoOperator",
    "KlingBatchVideoOperator",
    "KlingImageToVideoOperator",
    "KlingTextToVideoOperator",
    "KlingVideoOperator",
    "annotate_outlets",
    "describe_usage",
    "download",
    "fail_fast",
    "find_existing_video",
    "generation_from_event",
    "model_from_id",
    "result_dict",
    "sidecar_path",
    "sidecar_reusable",
    "stored_video_link",
    "timeout_seconds",
    "video_file_name",
]


class KlingImageToVideoOperator(KlingBaseVideoOperator):
    """Generate a video clip from a still image with any image-to-video model of the catalog.

    Image inputs (``image_url``, ``tail_image_url``, masks) take an http(s) URL, a Base64 data URI, or a
    file: a local path, an ObjectStoragePath or an fsspec URL (``s3://``, ``gs://``, ``file://``), which
    is read, checked (PNG/JPEG, the model's size limit) and sent as a data URI.

    :param image_url: the first frame.
    :param prompt: the text that guides the motion.
    :param tail_image_url: the last frame (models that take one).
    :param static_mask_url: motion-brush static area (also accepted as ``parameters={"static_mask": ...}``).
    :param dynamic_masks: motion-brush masks: ``[{"mask_url": ..., "trajectories": [{"x": .., "y": ..}]}]``.
    :param duration: seconds: 5 or 10, or 3 to 15 on v3 models.
    :param negative_prompt: what to keep out of the video.
    :param cfg_scale: 0 to 1, how closely to follow the prompt.
    :param model: an image-to-video model id (default the seed's v1 standard).
    :param parameters: any other field of the model (``generate_audio``, ``camera_control``, ...).
    """

    kind = "image-to-video"
    request_field_names = (
        "image_url",
        "prompt",
        "tail_image_url",
        "static_mask_url",
        "dynamic_masks",
        "duration",
        "negative_prompt",
        "cfg_scale",
    )
    template_fields: Sequence[str] = (*request_field_names, *KlingBaseVideoOperator.template_fields)
    template_fields_renderers = {"dynamic_masks": "json", "parameters": "json"}

    def __init__(
        self,
        *,
        image_url: Any,
        prompt: str | None = None,
        tail_image_url: Any = None,
        static_mask_url: Any = None,
        dynamic_masks: list[dict[str, Any]] | None = None,
        duration: str | int | None = None,
        negative_prompt: str | None = None,
        cfg_scale: float | None = None,
        model: str = DEFAULT_MODEL,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, **kwargs)
        self.image_url = image_url
        self.prompt = prompt
        self.tail_image_url = tail_image_url
        self.static_mask_url = static_mask_url
        self.dynamic_masks = dynamic_masks
        self.duration = duration
        self.negative_prompt = negative_prompt
        self.cfg_scale = cfg_scale


class KlingTextToVideoOperator(KlingBaseVideoOperator):
    """Generate a video clip from text with any text-to-video model of the catalog.

    :param prompt: the text to turn into video (or ``parameters={"multi_prompt": [...]}`` on v3 models).
    :param aspect_ratio: ``16:9`` (the service's default), ``9:16`` or ``1:1``.
    :param duration: seconds: 5 or 10, or 3 to 15 on v3 models.
    :param negative_prompt: what to keep out of the video.
    :param cfg_scale: 0 to 1, how closely to follow the prompt.
    :param model: a text-to-video model id (default ``kling-video/v1.6/standard/text-to-video``).
    :param parameters: any other field of the model (``generate_audio``, ``camera_control``, ...).
    """

    kind = "text-to-video"
    request_field_names = ("prompt", "aspect_ratio", "duration", "negative_prompt", "cfg_scale")
    template_fields: Sequence[str] = (*request_field_names, *KlingBaseVideoOperator.template_fields)

    def __init__(
        self,
        *,
        prompt: str | None = None,
        aspect_ratio: str | None = None,
        duration: str | int | None = None,
        negative_prompt: str | None = None,
        cfg_scale: float | None = None,
        model: str = DEFAULT_TEXT_MODEL,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, **kwargs)
        self.prompt = prompt
        self.aspect_ratio = aspect_ratio
        self.duration = duration
        self.negative_prompt = negative_prompt
        self.cfg_scale = cfg_scale


class KlingVideoOperator(KlingBaseVideoOperator):
    """Generate a video with any model of the catalog: multi-image, effects, avatar, o1 reference and
    edit, motion control, or image/text-to-video, all fields given in ``parameters``.

    :param model: any Kling model id.
    :param parameters: the model's fields, e.g. ``{"image_url": ..., "audio_url": ...}`` for an avatar.
    :param prompt: the prompt, for models that take one (or in ``parameters``).
    """

    request_field_names = ("prompt",)
    template_fields: Sequence[str] = (*request_field_names, *KlingBaseVideoOperator.template_fields)

    def __init__(self, *, model: str, prompt: str | None = None, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self.prompt = prompt
