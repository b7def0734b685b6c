"""The model catalog: every model through the operators to the emulator, and bad input per model.

Bodies come from tests/support/catalog_bodies.py, written from the service's pages apart from the catalog.
"""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_kling import catalog
from airflow_provider_kling.exceptions import KlingValidationError
from airflow_provider_kling.operators.kling import RESULT_KEYS
from tests.support.catalog_bodies import BODIES, IMG, IMG2, VIDEO, expected_body
from tests.support.connections import API_KEY, set_connection
from tests.support.dags import TEST_DAGS, load_dag_file, run_dag
from tests.support.hooks import make_hook

V1 = "kling-video/v1/standard/image-to-video"
V3_PRO_I2V = "klingai/video-v3-pro-image-to-video"
V3_TURBO_T2V = "klingai/video-v3-turbo-pro-text-to-video"
OMNI_I2V = "klingai/video-v3-omni-1080p-image-to-video"
EFFECTS = "klingai/kling-video-v1.6-pro-effects"
AVATAR = "klingai/avatar-pro"
O1_REF = "klingai/video-o1-reference-to-video"
MULTI = "kling-video/v1.6/standard/multi-image-to-video"
T2V_V2 = "klingai/v2.1-master-text-to-video"
MOTION_V26 = "klingai/video-v2-6-motion-control"
V26_I2V = "klingai/video-v2-6-pro-image-to-video"
V2_I2V = "klingai/v2.1-master-image-to-video"


def png_bytes(size: int = 0) -> bytes:
    """A real 1x1 PNG, padded with a trailing chunk to about ``size`` bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    body = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    body += chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
    if size:
        body += chunk(b"tEXt", b"pad\x00" + b"x" * size)
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- every model, both ends
def test_catalog_and_the_written_bodies_cover_the_same_models() -> None:
    assert set(BODIES) == set(catalog.current_models())
    assert all(catalog.MODELS[m].get("retired") for m in set(catalog.MODELS) - set(BODIES))


@pytest.mark.airflow3
def test_every_model_through_the_operators_on_both_endpoints(emulator: Any, airflow_db: Any) -> None:
    set_connection("kling_legacy", host=emulator.base_url, password=API_KEY)
    set_connection("kling_unified", host=emulator.base_url, password=API_KEY, extra={"endpoint": "unified"})
    module = load_dag_file(TEST_DAGS / "kling_catalog.py")
    result = run_dag(module.dag)

    assert result.state == "success"
    received = {(r.endpoint, r.json["model"]): r for r in emulator.requests if r.method == "POST"}
    assert len(received) == len(BODIES) + 1
    # Every model through its operator; every operator on both endpoints. Every model's body on both
    # endpoints: test_every_model_through_the_hook.
    pairs = {(module.operator_of(model), endpoint) for model, endpoint in module.ENDPOINTS.items()}
    assert pairs == {(module.operator_of(m), e) for m in BODIES for e in ("legacy", "unified")}
    assert set(module.ENDPOINTS) == set(BODIES)
    for model, endpoint in module.ENDPOINTS.items():
        post = received[(endpoint, model)]
        assert post.status == 201, (endpoint, model)
        assert post.path == catalog.ENDPOINT_PATHS[endpoint]
        assert post.json == expected_body(model, endpoint), (endpoint, model)
        out = result.xcom(module.task_id(model, endpoint))
        assert tuple(out) == RESULT_KEYS
        assert (out["model"], out["endpoint"], out["status"]) == (model, endpoint, "pending")
        assert out["usage"], (endpoint, model)  # billed at submit
    # An unknown model and field, with check_capabilities=False: reach the service unchanged.
    unknown = received[("unified", module.UNKNOWN_MODEL)]
    assert unknown.json == {"model": module.UNKNOWN_MODEL, **module.UNKNOWN_FIELDS}


@pytest.mark.parametrize("endpoint", ["legacy", "unified"])
def test_every_model_through_the_hook(emulator: Any, endpoint: str) -> None:
    # The same bodies without Airflow's scheduler in the way (this also runs on Airflow 2.11).
    extra = {"endpoint": endpoint}
    set_connection("kling_default", host=emulator.base_url, password=API_KEY, extra=extra)
    hook = make_hook()
    for model in BODIES:
        fields = {"model": model, **BODIES[model][0]}
        if BODIES[model][1] is not None:
            fields["duration"] = BODIES[model][1]
        hook.submit({k: v for k, v in fields.items() if v is not None})
    bodies = [r.json for r in emulator.requests]
    assert bodies == [expected_body(model, endpoint) for model in BODIES]
    assert {r.path for r in emulator.requests} == {catalog.ENDPOINT_PATHS[endpoint]}


@pytest.mark.parametrize("endpoint", ["legacy", "unified"])
def test_polls_go_to_the_endpoint_of_the_generation(emulator: Any, endpoint: str) -> None:
    set_connection("kling_default", host=emulator.base_url, password=API_KEY, extra={"endpoint": endpoint})
    hook = make_hook()
    generation = hook.submit({"model": V3_TURBO_T2V, "prompt": "a paper boat"})
    emulator.complete(generation.id)
    done = hook.get_generation(generation.id)
    assert done.video_url
    assert [r.path for r in emulator.requests] == [catalog.ENDPOINT_PATHS[endpoint]] * 2
    # Asked explicitly for the other endpoint, the hook goes there (the sensor's `api`).
    other = "unified" if endpoint == "legacy" else "legacy"
    hook.get_generation(generation.id, api=other)
    assert emulator.requests[-1].path == catalog.ENDPOINT_PATHS[other]


# ----------------------------------------------------------------------------- bad input per model
def base(model: str) -> dict[str, Any]:
    fields = {k: v for k, v in BODIES[model][0].items() if v is not None}
    return {"model": model, **fields}


MISSING = object()
# (model, overrides, the field the error names, words that say what is allowed)
BAD = [
    (V1, {"duration": 15}, "duration", ["5 or 10 seconds", "got 15"]),
    (V3_PRO_I2V, {"duration": 2}, "duration", ["from 3 to 15", "got 2"]),
    (V3_PRO_I2V, {"duration": 16}, "duration", ["from 3 to 15"]),
    (V3_PRO_I2V, {"duration": "7.5"}, "duration", ["seconds: 3 to 15", "got '7.5'"]),
    (V3_TURBO_T2V, {"duration": 0}, "duration", ["from 3 to 15"]),
    (AVATAR, {"duration": 5}, "duration", ["not a field of model", "image_url, audio_url"]),
    (MOTION_V26, {"duration": 5}, "duration", ["not a field of model"]),
    (MOTION_V26, {"mode": "pro"}, "mode", ["not a field of model"]),
    ("klingai/video-v3-motion-control", {"mode": "max"}, "mode", ["'std' or 'pro'"]),
    (MOTION_V26, {"character_orientation": "left"}, "character_orientation", ["'image' or 'video'"]),
    (MOTION_V26, {"video_url": MISSING}, "video_url", ["Field required"]),
    (MOTION_V26, {"video_url": "ftp://example.com/v.mp4"}, "video_url", ["http(s) URL"]),
    (MOTION_V26, {"keep_audio": "yes"}, "keep_audio", ["valid boolean"]),
    (V2_I2V, {"tail_image_url": IMG2}, "tail_image_url", ["not a field of model", "static_mask"]),
    (V2_I2V, {"generate_audio": True}, "generate_audio", ["not a field of model"]),
    (
        "klingai/v2-master-image-to-video",
        {"static_mask": IMG2},
        "camera_control",
        ["cannot be combined with static_mask"],
    ),
    (V2_I2V, {"camera_control": {"type": "zoom"}}, "camera_control.type", ["'simple'", "'down_back'"]),
    (
        V2_I2V,
        {"camera_control": {"type": "simple", "config": {"zoom": 11}}},
        "camera_control.config.zoom",
        ["less than or equal to 10"],
    ),
    (
        V2_I2V,
        {"camera_control": {"type": "down_back", "config": {"zoom": 2}}},
        "camera_control",
        ["a preset and takes no config"],
    ),
    (
        V2_I2V,
        {"camera_control": {"type": "simple", "config": {"zoom": 0, "pan": 0}}},
        "camera_control",
        ["exactly one non-zero axis"],
    ),
    (T2V_V2, {"camera_control": {"type": "simple"}}, "camera_control", ["'down_back'", "'forward_up'"]),
    (
        T2V_V2,
        {"advanced_camera_control": {"movement_type": "spin", "movement_value": 1}},
        "advanced_camera_control.movement_type",
        ["'horizontal'", "'zoom'"],
    ),
    (
        T2V_V2,
        {"advanced_camera_control": {"movement_type": "pan", "movement_value": 12}},
        "advanced_camera_control.movement_value",
        ["less than or equal to 10"],
    ),
    (T2V_V2, {"aspect_ratio": "4:3"}, "aspect_ratio", ["'16:9'", "'9:16'", "'1:1'"]),
    (T2V_V2, {"image_url": IMG}, "image_url", ["not a field of model"]),
    (T2V_V2, {"prompt": MISSING}, "prompt", ["Field required"]),
    (T2V_V2, {"prompt": "x" * 2501}, "prompt", ["at most 2500 characters"]),
    (T2V_V2, {"cfg_scale": 2}, "cfg_scale", ["less than or equal to 1"]),
    (V3_TURBO_T2V, {"prompt": "x" * 3073}, "prompt", ["at most 3072 characters"]),
    (V3_TURBO_T2V, {"prompt": MISSING}, "prompt", ["or give multi_prompt"]),
    (V3_TURBO_T2V, {"multi_prompt": [{"prompt": "a", "duration": 3}]}, "multi_prompt", ["give one of them"]),
    (
        V3_TURBO_T2V,
        {"prompt": MISSING, "multi_prompt": [{"prompt": "a", "duration": 3}] * 7},
        "multi_prompt",
        ["at most 6 items"],
    ),
    (V3_TURBO_T2V, {"prompt": MISSING, "multi_prompt": []}, "multi_prompt", ["at least 1 item"]),
    (
        V3_TURBO_T2V,
        {"prompt": MISSING, "multi_prompt": ["a plain string"]},
        "multi_prompt.0",
        ["valid dictionary"],
    ),
    (
        V3_TURBO_T2V,
        {"prompt": MISSING, "multi_prompt": [{"prompt": "a", "duration": 16}]},
        "multi_prompt.0.duration",
        ["from 1 to 15"],
    ),
    (V3_TURBO_T2V, {"generate_audio": False}, "generate_audio", ["not a field of model"]),
    (V3_TURBO_T2V, {"aspect_ratio": "21:9"}, "aspect_ratio", ["'16:9'"]),
    (V3_PRO_I2V, {"aspect_ratio": "16:9"}, "aspect_ratio", ["not a field of model"]),
    (V3_PRO_I2V, {"shot_type": "intelligence"}, "shot_type", ["'customize' or 'intelligent'"]),
    (V3_PRO_I2V, {"generate_audio": "false"}, "generate_audio", ["valid boolean"]),
    (V3_PRO_I2V, {"image_url": MISSING}, "image_url", ["Field required"]),
    (
        V3_PRO_I2V,
        {"elements": [{"reference_image_urls": [IMG]}] * 5},
        "elements",
        ["at most 4 items"],
    ),
    (
        V3_PRO_I2V,
        {"elements": [{"reference_image_urls": [IMG] * 5}]},
        "elements.0.reference_image_urls",
        ["at most 4 items"],
    ),
    (V3_PRO_I2V, {"elements": [{"frontal_image_url": IMG}]}, "elements.0.reference_image_urls", ["required"]),
    (OMNI_I2V, {"generate_audio": MISSING}, "tail_image_url", ["needs generate_audio=False"]),
    (OMNI_I2V, {"generate_audio": True}, "tail_image_url", ["needs generate_audio=False"]),
    (OMNI_I2V, {"shot_type": "random"}, "shot_type", ["'intelligence'"]),
    (EFFECTS, {"effect_scene": "moonwalk"}, "effect_scene", ["'hug'", "'squish'"]),
    (EFFECTS, {"effect_scene": "hug"}, "image_url", ["list of 2 image URLs", "'hug'"]),
    (EFFECTS, {"effect_scene": "squish", "image_url": [IMG, IMG2]}, "image_url", ["must be one image"]),
    (EFFECTS, {"effect_scene": "kiss", "image_url": [IMG, IMG2, IMG]}, "image_url", ["at most 2 items"]),
    (EFFECTS, {"effect_scene": MISSING}, "effect_scene", ["Field required"]),
    (EFFECTS, {"duration": 7}, "duration", ["5 or 10 seconds"]),
    (EFFECTS, {"prompt": "x"}, "prompt", ["not a field of model"]),
    (AVATAR, {"audio_url": MISSING}, "audio_url", ["Field required"]),
    (AVATAR, {"audio_url": "https://example.com/s.ogg"}, "audio_url", ["mp3, wav, m4a, aac"]),
    (AVATAR, {"audio_url": "data:image/png;base64,AAAA"}, "audio_url", ["not an audio"]),
    (AVATAR, {"prompt": "x" * 2501}, "prompt", ["at most 2500 characters"]),
    (MULTI, {"image_list": [IMG]}, "image_list", ["at least 2 items"]),
    (MULTI, {"image_list": [IMG] * 5}, "image_list", ["at most 4 items"]),
    (MULTI, {"image_list": [IMG, "ftp://example.com/2.png"]}, "image_list.1", ["http(s) URL"]),
    (O1_REF, {"image_list": [IMG] * 8}, "image_list", ["at most 7 items"]),
    (O1_REF, {"elements": [{"reference_image_urls": [IMG]}]}, "elements.0.frontal_image_url", ["required"]),
    (
        O1_REF,
        {"elements": [{"reference_image_urls": [IMG], "frontal_image_url": IMG, "video_url": VIDEO}]},
        "elements.0.video_url",
        ["allowed here: reference_image_urls, frontal_image_url"],
    ),
    ("klingai/video-o1-video-to-video-reference", {"image_list": [IMG] * 5}, "image_list", ["at most 4"]),
    ("klingai/video-o1-image-to-video", {"tail_image_url": IMG2}, "tail_image_url", ["last_image_url"]),
    (V26_I2V, {"cfg_scale": 0.5}, "cfg_scale", ["not a field of model"]),
    (V26_I2V, {"image_url": "data:image/png;base64,!!!"}, "image_url", ["does not decode"]),
    (V26_I2V, {"image_url": "data:image/png;base64,R0lGODlhAQABAAAAACw="}, "image_url", ["neither a PNG"]),
    (V26_I2V, {"image_url": "data:text/plain;base64,aGk="}, "image_url", ["not an image"]),
    (V26_I2V, {"image_url": "data:image/png,notbase64"}, "image_url", ["Base64 data URI"]),
    (V1, {"provider": "openai"}, "provider", ["'auto'", "'kling'", "'fal'"]),
    ("kling-video/v1.5/standard/text-to-video", {}, "model", ["retired", "v1.6/standard/text-to-video"]),
    (
        V1,
        {"model": "klingai/video-v3-pro-text-to-video"},
        "model",
        ["text-to-video model", "KlingTextToVideoOperator"],
    ),
]


def with_overrides(model: str, overrides: dict[str, Any]) -> dict[str, Any]:
    body = {**(base(model) if model in BODIES else {"model": model, "prompt": "x"}), **overrides}
    return {k: v for k, v in body.items() if v is not MISSING}


@pytest.mark.parametrize(
    ("model", "overrides", "field", "words"),
    BAD,
    ids=[f"{i}-{case[0].rsplit('/', 1)[-1]}-{case[2]}" for i, case in enumerate(BAD)],
)
def test_bad_input_fails_before_any_request(
    emulator: Any, model: str, overrides: dict[str, Any], field: str, words: list[str]
) -> None:
    from airflow_provider_kling.models import build_request

    body = with_overrides(model, overrides)
    if overrides.get("model"):  # an operator of one kind given a model of another

        def send() -> Any:
            return build_request(body, kind=catalog.MODELS[model]["kind"])
    else:

        def send() -> Any:
            return make_hook().submit_generation(body)

    with pytest.raises(KlingValidationError) as info:
        send()
    message = dict(info.value.errors).get(field)
    assert message is not None, info.value.errors
    for word in words:
        assert word in message, (word, message)
    assert "nothing was sent" in str(info.value)
    assert emulator.requests == []


def test_at_least_sixty_bad_inputs_over_the_new_models() -> None:
    assert len(BAD) >= 60
    assert len({case[0] for case in BAD}) >= 15


# ----------------------------------------------------------------------------- file inputs
def test_a_local_png_is_sent_as_a_data_uri(emulator: Any, tmp_path: Path) -> None:
    image = tmp_path / "frame.png"
    image.write_bytes(png_bytes())
    make_hook().submit({"model": V3_PRO_I2V, "image_url": str(image), "prompt": "p", "tail_image_url": IMG2})
    (post,) = emulator.requests
    prefix, data = post.json["image_url"].split(",", 1)
    assert prefix == "data:image/png;base64"
    assert base64.b64decode(data) == image.read_bytes()
    assert post.json["tail_image_url"] == IMG2


def test_object_storage_paths_and_file_urls_are_read(emulator: Any, tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 64
    (tmp_path / "a.jpg").write_bytes(jpeg)
    (tmp_path / "b.png").write_bytes(png_bytes())
    (tmp_path / "c.png").write_bytes(png_bytes())
    make_hook().submit(
        {
            "model": MULTI,
            "image_list": [
                f"file://{tmp_path / 'a.jpg'}",
                ObjectStoragePath(f"file://{tmp_path / 'b.png'}"),
                tmp_path / "c.png",
            ],
        }
    )
    (post,) = emulator.requests
    kinds = [uri.split(";", 1)[0] for uri in post.json["image_list"]]
    assert kinds == ["data:image/jpeg", "data:image/png", "data:image/png"]
    assert base64.b64decode(post.json["image_list"][0].split(",", 1)[1]) == jpeg


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (png_bytes(11 * 1024 * 1024), ["at most 10485760 bytes"]),
        (b"GIF89a" + b"\x00" * 32, ["neither a PNG nor a JPEG"]),
        (b"", ["neither a PNG nor a JPEG"]),
    ],
    ids=["oversize", "gif", "empty"],
)
def test_bad_image_files_fail_before_any_request(
    emulator: Any, tmp_path: Path, content: bytes, words: list[str]
) -> None:
    image = tmp_path / "frame.png"
    image.write_bytes(content)
    with pytest.raises(KlingValidationError) as info:
        make_hook().submit({"model": V1, "image_url": str(image), "prompt": "p"})
    message = dict(info.value.errors)["image_url"]
    for word in words:
        assert word in message
    assert emulator.requests == []


def test_the_file_limit_follows_the_model(emulator: Any, tmp_path: Path) -> None:
    # 11 MB: over the v1 models' 10 MB, within the v3 turbo models' 50 MB.
    image = tmp_path / "big.png"
    image.write_bytes(png_bytes(11 * 1024 * 1024))
    make_hook().submit(
        {"model": "klingai/video-v3-turbo-pro-image-to-video", "image_url": str(image), "prompt": "p"}
    )
    assert len(emulator.requests) == 1


def test_masks_may_be_files_and_errors_name_the_users_field(emulator: Any, tmp_path: Path) -> None:
    mask = tmp_path / "mask.png"
    mask.write_bytes(png_bytes())
    points = [{"x": 1, "y": 1}, {"x": 2, "y": 2}]
    make_hook().submit({**base(V1), "dynamic_masks": [{"mask_url": str(mask), "trajectories": points}]})
    (post,) = emulator.requests
    assert post.json["dynamic_masks"][0]["mask_url"].startswith("data:image/png;base64,")
    with pytest.raises(KlingValidationError) as info:
        make_hook().submit({**base(V1), "static_mask_url": str(tmp_path / "none.png")})
    assert [f for f, _ in info.value.errors] == ["static_mask_url"]
    assert len(emulator.requests) == 1
