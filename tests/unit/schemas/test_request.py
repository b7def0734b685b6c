"""Request validation in KlingHook.submit_generation: bad input fails before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_kling.exceptions import KlingBadRequestError, KlingValidationError
from tests.support.hooks import make_hook

V1 = "kling-video/v1/standard/image-to-video"
V16_STD = "kling-video/v1.6/standard/image-to-video"
V16_PRO = "kling-video/v1.6/pro/image-to-video"
BASE: dict[str, Any] = {
    "model": V1,
    "image_url": "https://example.com/cat.png",
    "prompt": "a cat turns its head",
}
TAIL = "https://example.com/last.png"
MISSING = object()


def mask(points: int = 2, **overrides: Any) -> dict[str, Any]:
    """A dynamic mask with ``points`` trajectory points."""
    return {
        "mask_url": "https://example.com/mask.png",
        "trajectories": [{"x": 10 * i, "y": 5 * i} for i in range(points)],
        **overrides,
    }


def points(*pairs: Any) -> list[Any]:
    return list(pairs)


# (overrides, the field the error must name, words that must say what is allowed)
BAD_INPUTS = [
    pytest.param({"model": MISSING}, "model", ["Field required"], id="missing-model"),
    pytest.param({"image_url": MISSING}, "image_url", ["Field required"], id="missing-image_url"),
    pytest.param({"prompt": MISSING}, "prompt", ["Field required"], id="missing-prompt"),
    pytest.param({"image_url": "ftp://example.com/cat.png"}, "image_url", ["http(s) URL"], id="ftp-image"),
    pytest.param({"image_url": "file:///tmp/no-cat.png"}, "image_url", ["does not exist"], id="file-image"),
    pytest.param({"image_url": "/tmp/no-cat.png"}, "image_url", ["does not exist"], id="missing-local-image"),
    pytest.param({"image_url": "https://"}, "image_url", ["http(s) URL"], id="image-without-host"),
    pytest.param({"image_url": "s3://bucket/cat.png"}, "image_url", ["s3://bucket/cat.png"], id="s3-image"),
    pytest.param(
        {"tail_image_url": "ftp://example.com/t.png"}, "tail_image_url", ["http(s) URL"], id="ftp-tail"
    ),
    pytest.param(
        {"static_mask_url": "gs://b/m.png"}, "static_mask_url", ["gs://b/m.png"], id="gs-static-mask"
    ),
    pytest.param(
        {"dynamic_masks": [mask(mask_url="data:image/png;base64,xx")]},
        "dynamic_masks.0.mask_url",
        ["data URI", "Base64"],
        id="data-uri-mask",
    ),
    pytest.param({"prompt": ""}, "prompt", ["at least 1 character"], id="empty-prompt"),
    pytest.param({"prompt": "   "}, "prompt", ["at least 1 character"], id="blank-prompt"),
    pytest.param({"duration": 7}, "duration", ["5 or 10 seconds", "got 7"], id="duration-7"),
    pytest.param({"duration": "7"}, "duration", ["5 or 10 seconds", "got 7"], id="duration-str-7"),
    pytest.param({"duration": "abc"}, "duration", ["seconds: 5 or 10", "got 'abc'"], id="duration-abc"),
    pytest.param({"duration": 5.5}, "duration", ["seconds: 5 or 10", "got 5.5"], id="duration-float"),
    pytest.param({"duration": True}, "duration", ["whole number of seconds", "got True"], id="duration-bool"),
    pytest.param({"cfg_scale": -0.1}, "cfg_scale", ["greater than or equal to 0"], id="cfg-negative"),
    pytest.param({"cfg_scale": 1.5}, "cfg_scale", ["less than or equal to 1"], id="cfg-above-1"),
    pytest.param({"cfg_scale": "high"}, "cfg_scale", ["valid number", "got 'high'"], id="cfg-word"),
    pytest.param({"cfg_scale": True}, "cfg_scale", ["number from 0 to 1", "boolean"], id="cfg-bool"),
    pytest.param({"dynamic_masks": [mask() for _ in range(7)]}, "dynamic_masks", ["at most 6"], id="7-masks"),
    pytest.param(
        {"dynamic_masks": [mask(1)]}, "dynamic_masks.0.trajectories", ["at least 2"], id="trajectory-1-point"
    ),
    pytest.param(
        {"dynamic_masks": [mask(78)]},
        "dynamic_masks.0.trajectories",
        ["at most 77"],
        id="trajectory-78-points",
    ),
    pytest.param(
        {"dynamic_masks": [mask(trajectories=points({"x": 1.5, "y": 0}, {"x": 1, "y": 1}))]},
        "dynamic_masks.0.trajectories.0.x",
        ["valid integer", "got 1.5"],
        id="float-coordinate",
    ),
    pytest.param(
        {"dynamic_masks": [mask(trajectories=points({"x": 0, "y": 0}, {"x": 1, "y": -3}))]},
        "dynamic_masks.0.trajectories.1.y",
        ["greater than or equal to 0", "got -3"],
        id="negative-coordinate",
    ),
    pytest.param(
        {"dynamic_masks": [mask(trajectories=points({"x": "4", "y": 0}, {"x": 1, "y": 1}))]},
        "dynamic_masks.0.trajectories.0.x",
        ["valid integer", "got '4'"],
        id="string-coordinate",
    ),
    pytest.param(
        {"dynamic_masks": [mask(trajectories=points({"x": 0}, {"x": 1, "y": 1}))]},
        "dynamic_masks.0.trajectories.0.y",
        ["Field required"],
        id="point-without-y",
    ),
    pytest.param(
        {"dynamic_masks": [mask(trajectories=points({"x": 0, "y": 0, "z": 1}, {"x": 1, "y": 1}))]},
        "dynamic_masks.0.trajectories.0.z",
        ["allowed here: x, y"],
        id="point-extra-z",
    ),
    pytest.param(
        {"dynamic_masks": [mask(mask="https://example.com/m.png")]},
        "dynamic_masks.0.mask_url",
        ["old name of mask", "give one of them"],
        id="mask-under-both-names",
    ),
    pytest.param(
        {"dynamic_masks": [mask(colour="red")]},
        "dynamic_masks.0.colour",
        ["allowed here: mask, trajectories"],
        id="mask-unknown-field",
    ),
    pytest.param(
        {"dynamic_masks": [mask(), mask(mask_url=MISSING)]},
        "dynamic_masks.1.mask_url",
        ["Field required"],
        id="mask-without-url",
    ),
    pytest.param(
        {"tail_image_url": TAIL, "dynamic_masks": [mask()]},
        "dynamic_masks",
        ["cannot be combined with tail_image_url", "one of tail image, masks and camera control"],
        id="masks-and-tail",
    ),
    pytest.param(
        {"tail_image_url": TAIL, "static_mask_url": "https://example.com/s.png"},
        "static_mask_url",
        ["cannot be combined"],
        id="static-mask-and-tail",
    ),
    pytest.param(
        {"model": V16_STD, "tail_image_url": TAIL},
        "tail_image_url",
        [f"not a field of model '{V16_STD}'", "it takes: image_url, prompt"],
        id="tail-on-v1.6-standard",
    ),
    pytest.param(
        {"model": V16_STD, "static_mask_url": "https://example.com/s.png"},
        "static_mask_url",
        [f"not a field of model '{V16_STD}'"],
        id="static-mask-on-v1.6-standard",
    ),
    pytest.param(
        {"model": V16_PRO, "dynamic_masks": [mask()]},
        "dynamic_masks",
        [f"not a field of model '{V16_PRO}'", "tail_image_url"],
        id="masks-on-v1.6-pro",
    ),
    pytest.param(
        {"model": "kling-video/v9/ultra/image-to-video"},
        "model",
        ["not in this provider's catalog", "model table", "check_capabilities=False"],
        id="unknown-model",
    ),
    pytest.param({"model": 3}, "model", ["model id as text", "got 3"], id="model-int"),
    pytest.param({"model": None}, "model", ["Field required"], id="model-none"),
    pytest.param(
        {"seed": 42},
        "seed",
        ["not a field of model", "it takes:", "image_url", "cfg_scale"],
        id="unknown-field",
    ),
    pytest.param(
        {"camera_control": {"type": "simple"}},
        "camera_control",
        ["'simple' needs config with exactly one non-zero axis"],
        id="camera-simple-without-config",
    ),
    pytest.param(
        {"static_mask": "https://example.com/s.png", "static_mask_url": "https://example.com/s.png"},
        "static_mask_url",
        ["old name of static_mask"],
        id="static-mask-under-both-names",
    ),
    pytest.param({"prompt": ["a", "cat"]}, "prompt", ["valid string", "got ['a', 'cat']"], id="list-prompt"),
    pytest.param(
        {"image_url": {"url": "https://example.com/cat.png"}},
        "image_url",
        ["URL or a file path as text", "got dict"],
        id="dict-image_url",
    ),
    pytest.param({"negative_prompt": 5}, "negative_prompt", ["valid string"], id="int-negative-prompt"),
    pytest.param({"dynamic_masks": mask()}, "dynamic_masks", ["valid list"], id="mask-not-in-a-list"),
    pytest.param(
        {"check_capabilities": "maybe"}, "check_capabilities", ["True or False"], id="bad-check-flag"
    ),
]


def with_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    body = {**BASE, **overrides}
    for key, value in list(body.items()):
        if value is MISSING:
            del body[key]
        elif key == "dynamic_masks" and isinstance(value, list):
            body[key] = [{k: v for k, v in m.items() if v is not MISSING} for m in value]
    return body


@pytest.mark.parametrize(("overrides", "field", "allowed"), BAD_INPUTS)
def test_bad_input_names_the_field_and_sends_nothing(
    emulator: Any, overrides: dict[str, Any], field: str, allowed: list[str]
) -> None:
    with pytest.raises(KlingValidationError) as info:
        make_hook().submit_generation(with_overrides(overrides))

    fields = [name for name, _ in info.value.errors]
    assert field in fields
    text = str(info.value)
    assert text.startswith("Invalid Kling request (")
    assert "nothing was sent" in text
    assert f"  - {field}: " in text
    message = dict(info.value.errors)[field]
    for words in allowed:
        assert words in message, (words, message)
    assert len(text) < 2000  # long inputs are shortened, not dumped into the task log
    assert emulator.requests == []


def test_several_problems_are_reported_together(emulator: Any) -> None:
    with pytest.raises(KlingValidationError) as info:
        make_hook().submit_generation(
            {"model": V1, "image_url": "ftp://x/a.png", "prompt": "", "duration": 7}
        )

    assert sorted(name for name, _ in info.value.errors) == ["duration", "image_url", "prompt"]
    assert str(info.value).startswith("Invalid Kling request (3 problems), nothing was sent:")
    assert emulator.requests == []


@pytest.mark.parametrize("request_value", [None, ["a", "list"], "a string"], ids=["none", "list", "str"])
def test_request_that_is_not_a_mapping(emulator: Any, request_value: Any) -> None:
    with pytest.raises(KlingValidationError) as info:
        make_hook().submit_generation(request_value)
    assert info.value.errors[0][0] == "request"
    assert "must be a mapping of fields" in info.value.errors[0][1]
    assert emulator.requests == []


# Ids are opaque (a path-like id is sent URL-encoded, see tests/integration/test_hostile.py): only
# unusable text fails.
@pytest.mark.parametrize("generation_id", ["", "   ", None, 42, "id with spaces", "x" * 300])
def test_bad_generation_ids_are_not_sent(emulator: Any, generation_id: Any) -> None:
    with pytest.raises(KlingValidationError) as info:
        make_hook().get_generation(generation_id)
    assert info.value.errors[0][0] == "generation_id"
    assert "the id the service returned" in str(info.value)
    assert emulator.requests == []


@pytest.mark.parametrize(
    ("poll_interval", "timeout", "field"),
    [(0, 10, "poll_interval"), (True, 10, "poll_interval"), (5, 0, "timeout"), (5, "600", "timeout")],
)
def test_bad_wait_settings_are_not_sent(emulator: Any, poll_interval: Any, timeout: Any, field: str) -> None:
    with pytest.raises(KlingValidationError) as info:
        make_hook().wait_for_generation("gen_0badc0de", poll_interval=poll_interval, timeout=timeout)
    assert [name for name, _ in info.value.errors] == [field]
    assert emulator.requests == []


# ----------------------------------------------------------------------------- accepted inputs
@pytest.mark.parametrize(("duration", "sent"), [(5, "5"), (10, "10"), ("10", "10")])
def test_duration_as_int_or_text_is_sent_as_text(emulator: Any, duration: Any, sent: str) -> None:
    generation_id = make_hook().submit_generation({**BASE, "duration": duration})

    assert [r.json["duration"] for r in emulator.requests] == [sent]
    assert emulator.generations[generation_id].duration == int(sent)


def test_full_v1_request_with_masks_is_sent_as_given(emulator: Any) -> None:
    body = {
        **BASE,
        "static_mask_url": "https://example.com/static.png",
        "dynamic_masks": [mask(2), mask(77)],
        "negative_prompt": "blur",
        "cfg_scale": 0,
    }
    make_hook().submit_generation(body)
    (post,) = emulator.requests
    assert post.json == {**body, "duration": "5"}  # the documented default is sent explicitly


def test_unknown_model_passes_with_check_capabilities_false(emulator: Any) -> None:
    # A model the catalog does not know yet (the service may): every field reaches it unchanged.
    body = {
        "model": "kling-video/v9/ultra/image-to-video",
        "image_url": "not even a URL",
        "brand_new_field": {"nested": [1, 2]},
        "duration": 42,
    }
    generation_id = make_hook().submit_generation({**body, "check_capabilities": False})
    (post,) = emulator.requests
    assert post.json == body
    assert "check_capabilities" not in post.json  # a provider switch, never sent
    assert list(emulator.generations) == [generation_id]


def test_check_capabilities_false_skips_per_model_rules(emulator: Any) -> None:
    # The provider sends a field the catalog says V16_STD does not take; the service then judges it.
    with pytest.raises(KlingBadRequestError) as info:
        make_hook().submit_generation(
            {**BASE, "model": V16_STD, "tail_image_url": TAIL, "check_capabilities": False}
        )
    assert "tail_image_url" in info.value.message
    (post,) = emulator.requests
    assert post.json == {**BASE, "model": V16_STD, "tail_image_url": TAIL, "duration": "5"}


@pytest.mark.parametrize("field", ["ratio", "aspect_ratio"])
def test_deprecated_ratio_is_accepted_with_a_warning(emulator: Any, field: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"{field} is deprecated by the Kling API"):
        generation_id = make_hook().submit_generation({**BASE, field: "16:9"})

    assert list(emulator.generations) == [generation_id]
    (post,) = emulator.requests
    assert post.json[field] == "16:9"
