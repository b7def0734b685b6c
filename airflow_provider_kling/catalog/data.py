"""Every Kling model the service documents, as data: one entry per model, nothing else.

Request validation (``airflow_provider_kling.schemas``), the emulator and the README's model table are
all generated from this table. Adding a model the service ships next month is one entry in
:data:`MODELS`; a field no model had before is one entry in :data:`FIELDS`.

Nothing here imports pydantic or Airflow: the operator modules never import this one at DAG parse
time, and the schemas package builds (and caches) a validator per model only when a request is built.

Sources: AIML API's documentation up to 2026-08 (the service Apilaplas copies) and Kling's own input
rules; see ``shared/api/MODELS.md`` in the project's history for the shapes seen.
"""

from __future__ import annotations

from typing import Any

#: The service's two endpoints (chosen on the connection): the seed's path, and the unified one.
ENDPOINT_PATHS: dict[str, str] = {
    "legacy": "/v2/generate/video/kling/generation",
    "unified": "/v2/video/generations",
}
DEFAULT_ENDPOINT = "legacy"

#: Kinds of generation, with the operator that submits each.
KINDS: dict[str, str] = {
    "image-to-video": "KlingImageToVideoOperator",
    "text-to-video": "KlingTextToVideoOperator",
    "multi-image-to-video": "KlingVideoOperator",
    "effects": "KlingVideoOperator",
    "avatar": "KlingVideoOperator",
    "reference-to-video": "KlingVideoOperator",
    "video-edit": "KlingVideoOperator",
    "motion-control": "KlingVideoOperator",
}

MB = 1024 * 1024
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
CAMERA_TYPES = ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")

#: The 80 effect scenes of the v1.6 effects models; the ones in TWO_IMAGE_EFFECTS take two images.
EFFECT_SCENES: tuple[str, ...] = (
    "magic_fireball",
    "pet_moto_rider",
    "media_interview",
    "pet_lion",
    "pet_delivery",
    "pet_chef",
    "santa_gifts",
    "santa_hug",
    "girlfriend",
    "boyfriend",
    "heart_gesture_1",
    "pet_wizard",
    "smoke_smoke",
    "thumbs_up",
    "instant_kid",
    "dollar_rain",
    "cry_cry",
    "building_collapse",
    "gun_shot",
    "mushroom",
    "double_gun",
    "pet_warrior",
    "lightning_power",
    "jesus_hug",
    "shark_alert",
    "long_hair",
    "lie_flat",
    "polar_bear_hug",
    "brown_bear_hug",
    "jazz_jazz",
    "office_escape_plow",
    "fly_fly",
    "watermelon_bomb",
    "pet_dance",
    "boss_coming",
    "wool_curly",
    "iron_warrior",
    "pet_bee",
    "marry_me",
    "swing_swing",
    "day_to_night",
    "piggy_morph",
    "wig_out",
    "car_explosion",
    "ski_ski",
    "tiger_hug",
    "siblings",
    "construction_worker",
    "let's_ride",
    "snatched",
    "magic_broom",
    "felt_felt",
    "jumpdrop",
    "celebration",
    "splashsplash",
    "hula",
    "surfsurf",
    "fairy_wing",
    "angel_wing",
    "dark_wing",
    "skateskate",
    "plushcut",
    "jelly_press",
    "jelly_slice",
    "jelly_squish",
    "jelly_jiggle",
    "pixelpixel",
    "yearbook",
    "instant_film",
    "anime_figure",
    "rocketrocket",
    "bloombloom",
    "dizzydizzy",
    "fuzzyfuzzy",
    "squish",
    "expansion",
    "hug",
    "kiss",
    "heart_gesture",
    "fight",
)
TWO_IMAGE_EFFECTS = ("hug", "kiss", "heart_gesture")
#: Scenes documented to take exactly one image (the others are not documented either way).
ONE_IMAGE_EFFECTS = ("squish", "expansion")

# ------------------------------------------------------------------------------------------ fields
# Each field's type and limits; a model entry may override a limit under "limits".
# Types: text, image (http(s) URL, Base64 data URI, or a file: path, file://, s3://, gs://, ...),
# image_or_pair, images, audio, video (http(s) URLs), duration, number, bool, choice,
# camera_object, camera_preset, advanced_camera, dynamic_masks, multi_prompt, elements.
# Every media input (image, audio, video) also takes a local path, an ObjectStoragePath / fsspec URL
# or an upstream Kling task's result (resolved before the POST: utils/inputs.py).

#: Media kinds the service takes as a Base64 data URI (MODELS.md: image_url is "URL or Base64");
#: audio and video it fetches from a URL only, so a local audio or video file is staged and presigned.
BASE64_MEDIA = ("image",)
FIELDS: dict[str, dict[str, Any]] = {
    "prompt": {"type": "text", "max_length": 2500, "doc": "the text that guides the video"},
    "negative_prompt": {"type": "text", "max_length": 2500, "doc": "what to keep out of the video"},
    "image_url": {"type": "image", "max_bytes": 10 * MB, "doc": "the first frame"},
    "tail_image_url": {"type": "image", "max_bytes": 10 * MB, "doc": "the last frame"},
    "last_image_url": {"type": "image", "max_bytes": 10 * MB, "doc": "the last frame (o1)"},
    "static_mask": {
        "type": "image",
        "max_bytes": 10 * MB,
        "seed_name": "static_mask_url",
        "doc": "motion brush: the area that stays still",
    },
    "dynamic_masks": {
        "type": "dynamic_masks",
        "max_items": 6,
        "min_points": 2,
        "max_points": 77,
        "doc": "motion brush: up to 6 masks, each with a 2..77 point trajectory",
    },
    "duration": {"type": "duration", "choices": (5, 10), "doc": "seconds of video"},
    "cfg_scale": {"type": "number", "ge": 0.0, "le": 1.0, "doc": "how closely to follow the prompt"},
    "camera_control": {"type": "camera_object", "doc": "a camera move: {type, config}"},
    "advanced_camera_control": {
        "type": "advanced_camera",
        "doc": "{movement_type: horizontal/vertical/pan/tilt/roll/zoom, movement_value: -10..10}",
    },
    "aspect_ratio": {"type": "choice", "choices": ASPECT_RATIOS, "doc": "the video's aspect ratio"},
    "ratio": {"type": "choice", "choices": ASPECT_RATIOS, "doc": "old name of aspect_ratio"},
    "image_list": {"type": "images", "min_items": 2, "max_items": 4, "doc": "reference images"},
    "effect_scene": {"type": "choice", "choices": EFFECT_SCENES, "doc": "the effect to apply"},
    "audio_url": {
        "type": "audio",
        "formats": ("mp3", "wav", "m4a", "aac"),
        "max_bytes": 5 * MB,
        "doc": "the speech to lip-sync (mp3, wav, m4a or aac, at most 5 MB)",
    },
    "video_url": {"type": "video", "doc": "the source video"},
    "generate_audio": {"type": "bool", "doc": "generate a soundtrack (the service's default: true)"},
    "keep_audio": {"type": "bool", "doc": "keep the source video's audio"},
    "multi_prompt": {
        "type": "multi_prompt",
        "item": "text",
        "min_items": 1,
        "max_items": 6,
        "doc": "several shots, one prompt each",
    },
    "elements": {
        "type": "elements",
        "max_items": 4,
        "max_references": 4,
        "frontal_required": False,
        "video": True,
        "doc": "up to 4 subjects: {reference_image_urls: 1..4 images, frontal_image_url, video_url}",
    },
    "shot_type": {"type": "choice", "choices": ("customize", "intelligent"), "doc": "how shots are cut"},
    "character_orientation": {
        "type": "choice",
        "choices": ("image", "video"),
        "doc": "follow the character's orientation in the image or in the video",
    },
    "mode": {"type": "choice", "choices": ("std", "pro"), "doc": "standard or professional quality"},
    "provider": {
        "type": "choice",
        "choices": ("auto", "kling", "klingai", "fal"),
        "doc": "which backend serves it (the service's default: auto)",
    },
}

#: Old field names a user may still write, and the field each stands for.
ALIASES: dict[str, str] = {"static_mask_url": "static_mask"}
#: Old name of ``dynamic_masks[].mask``.
MASK_SEED_NAME = "mask_url"

#: Every model takes these besides its own fields.
COMMON_OPTIONAL = ("provider",)

# ------------------------------------------------------------------------------------------ rules
# Cross-field rules, by name (implemented in schemas/request.py):
#   exclusive_tail_masks_camera: tail image, masks and camera control exclude each other (Kling).
#   prompt_or_multi_prompt: exactly one of prompt and multi_prompt.
#   tail_needs_no_audio: a tail image only with generate_audio=false (it defaults to true).
#   effect_image_count: two images for hug/kiss/heart_gesture, one for squish/expansion.

# ------------------------------------------------------------------------------------------ families
_SEED_I2V: dict[str, Any] = {
    "kind": "image-to-video",
    "required": ("image_url", "prompt"),
    "optional": (
        "tail_image_url",
        "static_mask",
        "dynamic_masks",
        "duration",
        "negative_prompt",
        "cfg_scale",
        "camera_control",
        "ratio",
        "aspect_ratio",
    ),
    "deprecated": {
        "ratio": "the video follows the input image's aspect ratio",
        "aspect_ratio": "the video follows the input image's aspect ratio",
    },
    "rules": ("exclusive_tail_masks_camera",),
    # Sent even when not given, as the first release did: a request's body (and hash) stays the same.
    "defaults": {"duration": 5},
    # The seed's field names (static_mask_url, mask_url, duration as text) on the legacy endpoint.
    "seed_names": True,
}
_T2V: dict[str, Any] = {
    "kind": "text-to-video",
    "required": ("prompt",),
    "optional": (
        "aspect_ratio",
        "duration",
        "negative_prompt",
        "cfg_scale",
        "camera_control",
        "advanced_camera_control",
    ),
    "limits": {"camera_control": {"type": "camera_preset", "choices": CAMERA_TYPES[1:]}},
}
_V2_I2V: dict[str, Any] = {
    "kind": "image-to-video",
    "required": ("image_url",),
    "optional": (
        "prompt",
        "duration",
        "negative_prompt",
        "cfg_scale",
        "static_mask",
        "dynamic_masks",
        "camera_control",
    ),
    "rules": ("exclusive_tail_masks_camera",),
}
# v3 standard/pro/omni: the docs give the prompt no length limit; elements may carry one video.
_V3: dict[str, Any] = {
    "optional": (
        "prompt",
        "multi_prompt",
        "tail_image_url",
        "duration",
        "elements",
        "shot_type",
        "generate_audio",
        "negative_prompt",
        "cfg_scale",
    ),
    "limits": {
        "duration": {"type": "duration", "range": (3, 15)},
        "prompt": {"max_length": None},
        "image_url": {"max_bytes": 50 * MB},
        "tail_image_url": {"max_bytes": 50 * MB},
    },
    "rules": ("prompt_or_multi_prompt",),
}
_V3_T2V = {**_V3, "kind": "text-to-video", "required": (), "optional": (*_V3["optional"], "aspect_ratio")}
_V3_I2V = {**_V3, "kind": "image-to-video", "required": ("image_url",)}
_V3_TURBO: dict[str, Any] = {
    "optional": ("prompt", "multi_prompt", "duration"),
    "limits": {
        **_V3["limits"],
        "prompt": {"max_length": 3072},
        "multi_prompt": {"item": "shot", "max_items": 6},
    },
    "rules": ("prompt_or_multi_prompt",),
}
_V3_TURBO_T2V: dict[str, Any] = {
    **_V3_TURBO,
    "kind": "text-to-video",
    "required": (),
    "optional": (*_V3_TURBO["optional"], "aspect_ratio"),
}
_V3_TURBO_I2V = {**_V3_TURBO, "kind": "image-to-video", "required": ("image_url",)}
_V3_OMNI_LIMITS = {**_V3["limits"], "shot_type": {"choices": ("customize", "intelligent", "intelligence")}}
_V3_OMNI_T2V = {**_V3_T2V, "limits": _V3_OMNI_LIMITS, "note": "video may be a list"}
_V3_OMNI_I2V: dict[str, Any] = {
    **_V3_I2V,
    "limits": _V3_OMNI_LIMITS,
    "rules": ("prompt_or_multi_prompt", "tail_needs_no_audio"),
    "note": "video may be a list",
}
_O1_MEDIA: dict[str, Any] = {
    "optional": ("image_list", "elements"),
    "limits": {
        "image_list": {"min_items": 1, "max_items": 7},
        "elements": {"frontal_required": True, "video": False},
    },
}

# ------------------------------------------------------------------------------------------ models
#: model id -> its entry: kind, required and optional fields, per-model limits, rules, notes.
MODELS: dict[str, dict[str, Any]] = {
    # --- 2025 image-to-video (the seed's family)
    "kling-video/v1/standard/image-to-video": _SEED_I2V,
    "kling-video/v1/pro/image-to-video": _SEED_I2V,
    "kling-video/v1.5/standard/image-to-video": _SEED_I2V,
    "kling-video/v1.5/pro/image-to-video": _SEED_I2V,
    "kling-video/v1.6/pro/image-to-video": {
        **_SEED_I2V,
        "optional": ("tail_image_url", "duration", "negative_prompt", "cfg_scale", "ratio", "aspect_ratio"),
        "note": "tail image, no masks or camera",
    },
    "kling-video/v1.6/standard/image-to-video": {
        **_SEED_I2V,
        "optional": ("duration", "negative_prompt", "cfg_scale", "ratio", "aspect_ratio"),
        "note": "no tail image, masks or camera",
    },
    # --- text-to-video
    "kling-video/v1/standard/text-to-video": {**_T2V, "seed_names": True},
    "kling-video/v1/pro/text-to-video": {**_T2V, "seed_names": True},
    "kling-video/v1.6/pro/text-to-video": {**_T2V, "seed_names": True},
    "kling-video/v1.6/standard/text-to-video": {
        **_T2V,
        "seed_names": True,
        "optional": ("aspect_ratio", "duration", "negative_prompt", "cfg_scale"),
    },
    "kling-video/v1.5/standard/text-to-video": {
        **_T2V,
        "retired": "the service no longer supports it; use kling-video/v1.6/standard/text-to-video",
    },
    "klingai/v2-master-text-to-video": _T2V,
    "klingai/v2.1-master-text-to-video": _T2V,
    # --- multi-image and effects
    "kling-video/v1.6/standard/multi-image-to-video": {
        "kind": "multi-image-to-video",
        "seed_names": True,
        "required": ("image_list",),
        "optional": ("prompt", "aspect_ratio", "duration", "negative_prompt"),
    },
    "klingai/kling-video-v1.6-standard-effects": {
        "kind": "effects",
        "required": ("image_url", "effect_scene"),
        "optional": ("duration",),
        "limits": {"image_url": {"type": "image_or_pair"}},
        "rules": ("effect_image_count",),
    },
    "klingai/kling-video-v1.6-pro-effects": {
        "kind": "effects",
        "required": ("image_url", "effect_scene"),
        "optional": ("duration",),
        "limits": {"image_url": {"type": "image_or_pair"}},
        "rules": ("effect_image_count",),
    },
    # --- v2 image-to-video
    "klingai/v2-master-image-to-video": {**_V2_I2V, "note": "no tail image"},
    "klingai/v2.1-master-image-to-video": {**_V2_I2V, "note": "no tail image"},
    "kling-video/v2.1/standard/image-to-video": {**_V2_I2V, "note": "no tail image"},
    "kling-video/v2.1/pro/image-to-video": {**_V2_I2V, "note": "no tail image"},
    "klingai/v2.5-turbo/pro/image-to-video": {
        "kind": "image-to-video",
        "required": ("image_url", "prompt"),
        "optional": ("duration", "negative_prompt", "cfg_scale"),
    },
    "klingai/v2.5-turbo/pro/text-to-video": {
        "kind": "text-to-video",
        "required": ("prompt",),
        "optional": ("aspect_ratio", "duration", "negative_prompt", "cfg_scale"),
    },
    # --- avatar
    "klingai/avatar-standard": {
        "kind": "avatar",
        "required": ("image_url", "audio_url"),
        "optional": ("prompt",),
        "note": "talking avatar; length follows the audio",
    },
    "klingai/avatar-pro": {
        "kind": "avatar",
        "required": ("image_url", "audio_url"),
        "optional": ("prompt",),
        "note": "talking avatar; length follows the audio",
    },
    # --- v2.6 with audio
    "klingai/video-v2-6-pro-text-to-video": {
        "kind": "text-to-video",
        "required": ("prompt",),
        "optional": ("aspect_ratio", "duration", "negative_prompt", "cfg_scale", "generate_audio"),
        "note": "with audio",
    },
    "klingai/video-v2-6-pro-image-to-video": {
        "kind": "image-to-video",
        "required": ("image_url", "prompt"),
        "optional": ("tail_image_url", "duration", "negative_prompt", "generate_audio"),
        "note": "with audio",
    },
    # --- o1
    "klingai/video-o1-image-to-video": {
        "kind": "image-to-video",
        "required": ("prompt", "image_url"),
        "optional": ("last_image_url", "duration"),
        "note": "the last frame is last_image_url",
    },
    "klingai/video-o1-reference-to-video": {
        "kind": "reference-to-video",
        "required": ("prompt",),
        "optional": (*_O1_MEDIA["optional"], "aspect_ratio", "duration"),
        "limits": _O1_MEDIA["limits"],
    },
    "klingai/video-o1-video-to-video-edit": {
        "kind": "video-edit",
        "required": ("prompt", "video_url"),
        "optional": (*_O1_MEDIA["optional"], "keep_audio"),
        "limits": _O1_MEDIA["limits"],
    },
    "klingai/video-o1-video-to-video-reference": {
        "kind": "video-edit",
        "required": ("prompt", "video_url"),
        "optional": (*_O1_MEDIA["optional"], "keep_audio", "aspect_ratio", "duration"),
        "limits": {**_O1_MEDIA["limits"], "image_list": {"min_items": 1, "max_items": 4}},
    },
    # --- motion control
    "klingai/video-v2-6-motion-control": {
        "kind": "motion-control",
        "required": ("image_url", "video_url"),
        "optional": ("prompt", "character_orientation", "keep_audio"),
        "renamed_from": ("klingai/video-v2-6-pro-motion-control",),
    },
    "klingai/video-v3-motion-control": {
        "kind": "motion-control",
        "required": ("image_url", "video_url"),
        "optional": ("prompt", "character_orientation", "keep_audio", "mode"),
    },
    # --- v3
    "klingai/video-v3-standard-text-to-video": _V3_T2V,
    "klingai/video-v3-standard-image-to-video": _V3_I2V,
    "klingai/video-v3-pro-text-to-video": _V3_T2V,
    "klingai/video-v3-pro-image-to-video": _V3_I2V,
    "klingai/video-v3-standard-turbo-text-to-video": {
        **_V3_TURBO_T2V,
        "aliases": ("kling-video/v3/turbo/standard/text-to-video",),
    },
    "klingai/video-v3-standard-turbo-image-to-video": {
        **_V3_TURBO_I2V,
        "aliases": ("kling-video/v3/turbo/standard/image-to-video",),
    },
    "klingai/video-v3-turbo-pro-text-to-video": {
        **_V3_TURBO_T2V,
        "aliases": ("kling-video/v3/turbo/pro/text-to-video",),
    },
    "klingai/video-v3-turbo-pro-image-to-video": {
        **_V3_TURBO_I2V,
        "aliases": ("kling-video/v3/turbo/pro/image-to-video",),
    },
    "klingai/video-v3-omni-720p-text-to-video": _V3_OMNI_T2V,
    "klingai/video-v3-omni-720p-image-to-video": _V3_OMNI_I2V,
    "klingai/video-v3-omni-1080p-text-to-video": _V3_OMNI_T2V,
    "klingai/video-v3-omni-1080p-image-to-video": _V3_OMNI_I2V,
}

#: Old or alternative ids, and the model each names.
MODEL_ALIASES: dict[str, str] = {
    alias: model_id
    for model_id, entry in MODELS.items()
    for alias in (*entry.get("aliases", ()), *entry.get("renamed_from", ()))
}


def model_entry(model_id: str) -> dict[str, Any] | None:
    """The catalog entry of ``model_id`` or of the model it is an alias of; None when unknown."""
    entry = MODELS.get(model_id)
    if entry is None and model_id in MODEL_ALIASES:
        entry = MODELS[MODEL_ALIASES[model_id]]
    return entry


def field_spec(model_id: str, name: str) -> dict[str, Any]:
    """The spec of field ``name`` for ``model_id``: the field's defaults with the model's limits on top."""
    entry = model_entry(model_id) or {}
    limits = entry.get("limits", {}).get(name, {})
    spec = {**FIELDS[name], **limits}
    if "range" in limits:
        spec.pop("choices", None)  # a model's range replaces the field's usual choices
    return spec


def model_fields(model_id: str) -> tuple[str, ...]:
    """Every field ``model_id`` takes besides ``model``, required ones first."""
    entry = model_entry(model_id) or {}
    return (*entry.get("required", ()), *entry.get("optional", ()), *COMMON_OPTIONAL)


def current_models() -> list[str]:
    """Model ids a user can pick today (not retired), in catalog order."""
    return [model_id for model_id, entry in MODELS.items() if not entry.get("retired")]
