"""A valid request for every model of the catalog, written out by hand from the service's pages.

Kept apart from the provider's catalog on purpose: the tests compare what the provider sends
with these bodies, so a mistake in the catalog shows up as a difference instead of being repeated.
"""

from __future__ import annotations

from typing import Any

IMG = "https://example.com/first.png"
IMG2 = "https://example.com/last.png"
VIDEO = "https://example.com/motion.mp4"
AUDIO = "https://example.com/speech.mp3"
SEED_I2V = {"image_url": IMG, "prompt": "a cat turns its head", "negative_prompt": "blur", "cfg_scale": 0.5}
T2V = {"prompt": "a lighthouse at dusk", "aspect_ratio": "9:16", "negative_prompt": "text"}
V2_I2V = {"image_url": IMG, "prompt": "waves roll in", "camera_control": {"type": "forward_up"}}
V3_I2V = {"image_url": IMG, "prompt": "a dancer spins", "generate_audio": True, "shot_type": "customize"}
V3_T2V = {"multi_prompt": ["a door opens", "a dog runs out"], "aspect_ratio": "1:1", "generate_audio": False}
TURBO_I2V = {"image_url": IMG, "prompt": "leaves fall"}
TURBO_T2V = {"multi_prompt": [{"prompt": "sunrise", "duration": 3}, {"prompt": "noon", "duration": 4}]}
OMNI_I2V = {"image_url": IMG, "tail_image_url": IMG2, "prompt": "a flower opens", "generate_audio": False}

#: model id -> (fields besides model and duration, a valid duration or None when the model has none)
BODIES: dict[str, tuple[dict[str, Any], int | None]] = {
    "kling-video/v1/standard/image-to-video": (
        {
            **SEED_I2V,
            "dynamic_masks": [{"mask_url": IMG2, "trajectories": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}],
        },
        10,
    ),
    "kling-video/v1/pro/image-to-video": ({**SEED_I2V, "static_mask_url": IMG2}, 5),
    "kling-video/v1.5/standard/image-to-video": ({**SEED_I2V, "tail_image_url": IMG2}, 10),
    "kling-video/v1.5/pro/image-to-video": (
        {**SEED_I2V, "camera_control": {"type": "simple", "config": {"zoom": 5}}},
        5,
    ),
    "kling-video/v1.6/pro/image-to-video": ({**SEED_I2V, "tail_image_url": IMG2}, 10),
    "kling-video/v1.6/standard/image-to-video": (SEED_I2V, 5),
    "kling-video/v1/standard/text-to-video": ({**T2V, "camera_control": "down_back"}, 5),
    "kling-video/v1/pro/text-to-video": (
        {**T2V, "advanced_camera_control": {"movement_type": "pan", "movement_value": -3}},
        10,
    ),
    "kling-video/v1.6/pro/text-to-video": (T2V, 5),
    "kling-video/v1.6/standard/text-to-video": (T2V, 10),
    "klingai/v2-master-text-to-video": (T2V, 5),
    "klingai/v2.1-master-text-to-video": ({**T2V, "cfg_scale": 0.2}, 10),
    "kling-video/v1.6/standard/multi-image-to-video": (
        {"image_list": [IMG, IMG2, IMG], "prompt": "a collage comes alive", "aspect_ratio": "16:9"},
        5,
    ),
    "klingai/kling-video-v1.6-standard-effects": ({"image_url": [IMG, IMG2], "effect_scene": "hug"}, 5),
    "klingai/kling-video-v1.6-pro-effects": ({"image_url": IMG, "effect_scene": "let's_ride"}, 10),
    "klingai/v2-master-image-to-video": (V2_I2V, 5),
    "klingai/v2.1-master-image-to-video": ({**V2_I2V, "static_mask": IMG2, "camera_control": None}, 10),
    "kling-video/v2.1/standard/image-to-video": (V2_I2V, 5),
    "kling-video/v2.1/pro/image-to-video": (
        {
            "image_url": IMG,
            "dynamic_masks": [{"mask": IMG2, "trajectories": [{"x": 0, "y": 0}, {"x": 9, "y": 9}]}],
        },
        10,
    ),
    "klingai/v2.5-turbo/pro/image-to-video": ({"image_url": IMG, "prompt": "a kite rises"}, 10),
    "klingai/v2.5-turbo/pro/text-to-video": ({"prompt": "rain on glass", "aspect_ratio": "16:9"}, 5),
    "klingai/avatar-standard": ({"image_url": IMG, "audio_url": AUDIO}, None),
    "klingai/avatar-pro": ({"image_url": IMG, "audio_url": AUDIO, "prompt": "calm, friendly"}, None),
    "klingai/video-v2-6-pro-text-to-video": ({**T2V, "generate_audio": True}, 10),
    "klingai/video-v2-6-pro-image-to-video": (
        {"image_url": IMG, "prompt": "a bell rings", "tail_image_url": IMG2, "generate_audio": False},
        5,
    ),
    "klingai/video-o1-image-to-video": (
        {"prompt": "glasses on", "image_url": IMG, "last_image_url": IMG2},
        10,
    ),
    "klingai/video-o1-reference-to-video": (
        {
            "prompt": "the two meet",
            "image_list": [IMG],
            "elements": [{"reference_image_urls": [IMG, IMG2], "frontal_image_url": IMG}],
            "aspect_ratio": "9:16",
        },
        5,
    ),
    "klingai/video-o1-video-to-video-edit": (
        {"prompt": "make it snow", "video_url": VIDEO, "keep_audio": True},
        None,
    ),
    "klingai/video-o1-video-to-video-reference": (
        {"prompt": "same moves, a robot", "video_url": VIDEO, "image_list": [IMG]},
        10,
    ),
    "klingai/video-v2-6-motion-control": (
        {"image_url": IMG, "video_url": VIDEO, "character_orientation": "video"},
        None,
    ),
    "klingai/video-v3-motion-control": (
        {"image_url": IMG, "video_url": VIDEO, "mode": "pro", "keep_audio": False},
        None,
    ),
    "klingai/video-v3-standard-text-to-video": (V3_T2V, 15),
    "klingai/video-v3-standard-image-to-video": (V3_I2V, 3),
    "klingai/video-v3-pro-text-to-video": ({"prompt": "a city wakes up", "shot_type": "intelligent"}, 8),
    "klingai/video-v3-pro-image-to-video": (
        {
            **V3_I2V,
            "elements": [{"reference_image_urls": [IMG2], "video_url": VIDEO}],
        },
        12,
    ),
    "klingai/video-v3-standard-turbo-text-to-video": (TURBO_T2V, 7),
    "klingai/video-v3-standard-turbo-image-to-video": (TURBO_I2V, 4),
    "klingai/video-v3-turbo-pro-text-to-video": ({"prompt": "a paper boat", "aspect_ratio": "9:16"}, 6),
    "klingai/video-v3-turbo-pro-image-to-video": (TURBO_I2V, 15),
    "klingai/video-v3-omni-720p-text-to-video": ({"prompt": "fireflies", "shot_type": "intelligence"}, 9),
    "klingai/video-v3-omni-720p-image-to-video": (OMNI_I2V, 5),
    "klingai/video-v3-omni-1080p-text-to-video": (V3_T2V, 10),
    "klingai/video-v3-omni-1080p-image-to-video": (OMNI_I2V, 11),
}
#: The seed-era (kling-video/v1*) models: on the legacy endpoint they keep the seed's names and
#: duration as text; the image-to-video ones send the seed's default duration when none is given.
SEED_MODELS = {m for m in BODIES if m.startswith("kling-video/v1")}
SEED_I2V_MODELS = {m for m in SEED_MODELS if m.endswith("/image-to-video")}


def request_fields(model: str) -> dict[str, Any]:
    """What a user passes: the fields (None values dropped) and the duration when the model has one."""
    fields, duration = BODIES[model]
    out = {k: v for k, v in fields.items() if v is not None}
    if duration is not None:
        out["duration"] = duration
    return out


def expected_body(model: str, endpoint: str) -> dict[str, Any]:
    """The body the service must receive for :func:`request_fields` on ``endpoint``."""
    body = {"model": model, **request_fields(model)}
    if model in SEED_I2V_MODELS:
        body.setdefault("duration", 5)
    if model in SEED_MODELS and endpoint == "legacy":
        body = {("static_mask_url" if k == "static_mask" else k): v for k, v in body.items()}
        if "dynamic_masks" in body:
            body["dynamic_masks"] = [
                {("mask_url" if k == "mask" else k): v for k, v in m.items()} for m in body["dynamic_masks"]
            ]
        if "duration" in body:
            body["duration"] = str(body["duration"])
    else:
        if "static_mask_url" in body:
            body["static_mask"] = body.pop("static_mask_url")
        if "dynamic_masks" in body:
            body["dynamic_masks"] = [
                {("mask" if k == "mask_url" else k): v for k, v in m.items()} for m in body["dynamic_masks"]
            ]
    return body
