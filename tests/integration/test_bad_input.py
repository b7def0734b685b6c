"""The bad-input table: every wrong value is refused with an error naming the field and what is allowed.

Operator and sensor cases run as real DAG files (tests/dags/bad_input_*.py) through ``dag.test()``,
with Jinja templates that render to the wrong value; each task's error is captured by its
``on_failure_callback``. Hook, trigger and connection cases call the provider directly. In every
case the emulator must see zero requests: nothing is sent, nothing is paid for.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_kling.exceptions import KlingConfigError, KlingValidationError
from airflow_provider_kling.hooks.kling import KlingHook
from airflow_provider_kling.triggers.kling import KlingGenerationTrigger, KlingTriggerEvent
from tests.support.connections import API_KEY, set_connection

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

# One worker runs the module, so its three bad-input DAGs run once (module fixture dag_failures).
pytestmark = pytest.mark.xdist_group("bad_input_dags")

GOOD_ID = "3f2a9c1e-5d4b-4c1a-9e8f-0b1c2d3e4f50:kling-video/v1/standard/image-to-video"
URL = "must be an http(s) URL, a Base64 data URI, a file path or an object-storage URL"
NO_FILE = "which does not exist"
ID_RULE = "non-empty text of at most 256 characters without spaces or control characters"
POLL_RULE = "number of seconds from 0.01 to 3600"
TIMEOUT_RULE = "above 0 and at most 7 days"
FIVE_OR_TEN = "must be 5 or 10 seconds on this model, got 7"
NO_KEY = ("password field", "labelled 'API Key'")
PLAIN_HTTP = ("host 'http://api.example.com'", "only https is allowed except to a loopback host")

#: (dag_id, task_id) -> (the field the error must name, what it must say is allowed).
DAG_CASES: dict[tuple[str, str], tuple[str, str]] = {
    ("bad_input_operator", "image_url_empty"): ("image_url", "must not be empty"),
    ("bad_input_operator", "image_url_ftp"): ("image_url", URL),
    ("bad_input_operator", "image_url_relative"): ("image_url", NO_FILE),
    ("bad_input_operator", "image_url_list"): ("image_url", "must be a URL or a file path as text"),
    ("bad_input_operator", "image_url_none"): ("image_url", "Field required"),
    ("bad_input_operator", "prompt_empty"): ("prompt", "at least 1 character"),
    ("bad_input_operator", "prompt_int"): ("prompt", "Input should be a valid string"),
    ("bad_input_operator", "prompt_dict"): ("prompt", "Input should be a valid string"),
    ("bad_input_operator", "duration_7"): ("duration", FIVE_OR_TEN),
    ("bad_input_operator", "duration_float"): ("duration", "whole number of seconds: 5 or 10; got 5.5"),
    ("bad_input_operator", "duration_word"): ("duration", "whole number of seconds: 5 or 10; got 'five'"),
    ("bad_input_operator", "duration_bool"): ("duration", "must be a whole number of seconds"),
    ("bad_input_operator", "cfg_scale_high"): ("cfg_scale", "less than or equal to 1"),
    ("bad_input_operator", "cfg_scale_negative"): ("cfg_scale", "greater than or equal to 0"),
    ("bad_input_operator", "cfg_scale_word"): ("cfg_scale", "Input should be a valid number"),
    ("bad_input_operator", "cfg_scale_bool"): ("cfg_scale", "must be a number from 0 to 1"),
    ("bad_input_operator", "model_unknown"): ("model", "pass check_capabilities=False to send it anyway"),
    ("bad_input_operator", "model_int"): ("model", "must be a Kling model id as text"),
    ("bad_input_operator", "negative_prompt_list"): ("negative_prompt", "Input should be a valid string"),
    ("bad_input_operator", "tail_on_v16_standard"): (
        "tail_image_url",
        "is not a field of model 'kling-video/v1.6/standard/image-to-video'",
    ),
    ("bad_input_operator", "static_mask_on_v16_standard"): (
        "static_mask_url",
        "is not a field of model 'kling-video/v1.6/standard/image-to-video'",
    ),
    ("bad_input_operator", "dynamic_masks_on_v16_pro"): (
        "dynamic_masks",
        "is not a field of model 'kling-video/v1.6/pro/image-to-video'",
    ),
    ("bad_input_operator", "tail_with_static_mask"): (
        "static_mask_url",
        "cannot be combined with tail_image_url",
    ),
    ("bad_input_operator", "static_mask_relative"): ("static_mask_url", NO_FILE),
    ("bad_input_operator", "dynamic_masks_string"): ("dynamic_masks", "Input should be a valid list"),
    ("bad_input_operator", "mask_one_point"): ("dynamic_masks.0.trajectories", "at least 2 items"),
    ("bad_input_operator", "mask_78_points"): ("dynamic_masks.0.trajectories", "at most 77 items"),
    ("bad_input_operator", "seven_masks"): ("dynamic_masks", "at most 6 items"),
    ("bad_input_operator", "mask_url_file"): ("dynamic_masks.0.mask_url", "neither a PNG nor a JPEG"),
    ("bad_input_operator", "mask_point_negative"): (
        "dynamic_masks.0.trajectories.0.x",
        "greater than or equal to 0",
    ),
    ("bad_input_operator", "mask_point_float"): ("dynamic_masks.0.trajectories.0.x", "valid integer"),
    ("bad_input_operator", "mask_unknown_field"): (
        "dynamic_masks.0.speed",
        "allowed here: mask, trajectories",
    ),
    ("bad_input_operator", "poll_interval_zero"): ("poll_interval", POLL_RULE),
    ("bad_input_operator", "poll_interval_negative"): ("poll_interval", POLL_RULE),
    ("bad_input_operator", "poll_interval_a_day"): ("poll_interval", POLL_RULE),
    ("bad_input_operator", "poll_interval_word"): ("poll_interval", POLL_RULE),
    ("bad_input_operator", "timeout_zero"): ("timeout", TIMEOUT_RULE),
    ("bad_input_operator", "timeout_negative"): ("timeout", TIMEOUT_RULE),
    ("bad_input_operator", "timeout_a_month"): ("timeout", TIMEOUT_RULE),
    ("bad_input_operator", "timeout_word"): ("timeout", TIMEOUT_RULE),
    ("bad_input_operator", "conn_without_key"): NO_KEY,
    ("bad_input_operator", "conn_blank_key"): NO_KEY,
    ("bad_input_operator", "conn_plain_http_remote"): PLAIN_HTTP,
    ("bad_input_operator", "conn_ftp_host"): ("host 'ftp://api.example.com'", "is not an http(s) URL"),
    ("bad_input_sensor", "id_empty"): ("generation_id", ID_RULE),
    ("bad_input_sensor", "id_none"): ("generation_id", ID_RULE),
    ("bad_input_sensor", "id_int"): ("generation_id", ID_RULE),
    ("bad_input_sensor", "id_list"): ("generation_id", ID_RULE),
    ("bad_input_sensor", "id_with_space"): ("generation_id", ID_RULE),
    ("bad_input_sensor", "id_newline"): ("generation_id", ID_RULE),
    ("bad_input_sensor", "id_too_long"): ("generation_id", ID_RULE),
    ("bad_input_sensor", "poke_interval_zero"): ("poke_interval", POLL_RULE),
    ("bad_input_sensor", "poke_interval_a_week"): ("poke_interval", POLL_RULE),
    ("bad_input_sensor", "timeout_zero"): ("timeout", TIMEOUT_RULE),
    ("bad_input_sensor", "timeout_a_month"): ("timeout", TIMEOUT_RULE),
    ("bad_input_sensor", "conn_without_key"): NO_KEY,
    ("bad_input_sensor", "conn_plain_http_remote"): PLAIN_HTTP,
    ("bad_input_text", "text_cfg_scale"): ("cfg_scale", "less than or equal to 1"),
    ("bad_input_text", "text_duration"): ("duration", FIVE_OR_TEN),
    ("bad_input_text", "text_dynamic_masks"): ("dynamic_masks", "Input should be a valid list"),
    ("bad_input_text", "text_image_url_undefined"): ("image_url", "must not be empty"),
    ("bad_input_text", "text_id_from_missing_xcom"): ("generation_id", "an id as returned by the service"),
    ("bad_input_text", "text_id_with_date"): ("generation_id", ID_RULE),
}

BAD_CONNECTIONS: dict[str, dict[str, Any]] = {
    "kling_bad_no_key": {},
    "kling_bad_blank_key": {"password": "   "},
    "kling_bad_plain_http": {"host": "http://api.example.com", "password": API_KEY},
    "kling_bad_ftp_host": {"host": "ftp://api.example.com", "password": API_KEY},
}


@pytest.fixture(scope="module")
def dag_failures(
    _emulator_server: Any, airflow_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Run the three bad-input DAGs once; map each (dag_id, task_id) to its state, error and requests.

    ``dag.test()`` runs one task at a time, and each task notes when it starts (its
    ``on_execute_callback``): the requests the emulator recorded from one task's start to the next
    task's start are that task's, so a leak names its case instead of failing every case.
    """
    from tests.dags.bad_input_operator import dag as operator_dag
    from tests.dags.bad_input_sensor import dag as sensor_dag
    from tests.dags.bad_input_text import dag as text_dag

    emu = _emulator_server
    for conn_id, fields in BAD_CONNECTIONS.items():
        # Connections that are wrong, but would reach the emulator if the check let them through.
        set_connection(conn_id, **{"host": emu.base_url, **fields})
    set_connection("kling_default", host=emu.base_url, password=API_KEY)
    log = tmp_path_factory.mktemp("bad-input") / "failures.jsonl"
    results: dict[str, Any] = {"tasks": {}, "requests": {}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KLING_BAD_INPUT_LOG", str(log))
        for dag in (operator_dag, sensor_dag, text_dag):
            emu.reset()
            run = dag.test()
            for ti in run.get_task_instances():
                results["tasks"][(dag.dag_id, ti.task_id)] = {"state": ti.state}
            recorded = [json.loads(line) for line in log.read_text().splitlines()]
            starts = sorted(
                (line["started"], line["task_id"])
                for line in recorded
                if "started" in line and line["dag_id"] == dag.dag_id
            )
            # A deferred task starts again on resuming: its window opens at its first start.
            first: dict[str, float] = {}
            for started, task_id in starts:
                first.setdefault(task_id, started)
            order = sorted((started, task_id) for task_id, started in first.items())
            requests = emu.requests
            for i, (started, task_id) in enumerate(order):
                until = order[i + 1][0] if i + 1 < len(order) else float("inf")
                results["requests"][(dag.dag_id, task_id)] = [
                    f"{r.method} {r.path}?{r.query}" for r in requests if started <= r.time < until
                ]
            # Nothing may arrive before the first task starts either.
            before = [r for r in requests if not order or r.time < order[0][0]]
            assert not before, (dag.dag_id, before)
    for line in log.read_text().splitlines():
        failure = json.loads(line)
        if "started" not in failure:
            results["tasks"][(failure["dag_id"], failure["task_id"])].update(failure)
    yield results
    emu.reset()


def test_table_covers_every_task(dag_failures: dict[str, Any]) -> None:
    assert set(dag_failures["tasks"]) == set(DAG_CASES)
    # Every task noted its start, so every case has its own request count.
    assert set(dag_failures["requests"]) == set(DAG_CASES)
    assert len(DAG_CASES) + len(DIRECT_CASES) >= 40


@pytest.mark.parametrize(("dag_id", "task_id"), list(DAG_CASES), ids=lambda v: str(v))
def test_bad_input_in_dag(dag_failures: dict[str, Any], dag_id: str, task_id: str) -> None:
    field, allowed = DAG_CASES[(dag_id, task_id)]
    outcome = dag_failures["tasks"][(dag_id, task_id)]
    assert outcome["state"] == "failed"
    # AirflowFailException: the task fails without spending its retries on a value that cannot change.
    assert outcome["type"] == "AirflowFailException", outcome
    message = outcome["message"]
    if "Invalid Kling request" in message:
        assert "nothing was sent" in message
        assert re.search(rf"^  - {re.escape(field)}: ", message, re.MULTILINE), message
    else:
        assert field in message, message
    assert allowed in message, message
    assert API_KEY not in message
    # Nothing was sent for this case (counted per task, so a leak names its case).
    assert dag_failures["requests"][(dag_id, task_id)] == []


def _hook(conn_id: str = "kling_default") -> KlingHook:
    return KlingHook(conn_id, max_attempts=1)


def _trigger_event(generation_id: Any, conn_id: str = "kling_default") -> dict[str, Any]:
    async def first_event() -> dict[str, Any]:
        trigger = KlingGenerationTrigger(
            generation_id=generation_id, kling_conn_id=conn_id, poll_interval=0.1
        )
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first_event())


#: name -> (call, the error class expected, field named, what is allowed).
DIRECT_CASES: dict[str, tuple[Callable[[], Any], type[Exception] | None, str, str]] = {
    "hook_wait_poll_interval_nan": (
        lambda: _hook().wait_for_generation(GOOD_ID, poll_interval=float("nan")),
        KlingValidationError,
        "poll_interval",
        POLL_RULE,
    ),
    "hook_wait_timeout_infinite": (
        lambda: _hook().wait_for_generation(GOOD_ID, poll_interval=1, timeout=float("inf")),
        KlingValidationError,
        "timeout",
        TIMEOUT_RULE,
    ),
    "hook_get_generation_space": (
        lambda: _hook().get_generation("gen_1 ?generation_id=gen_2"),
        KlingValidationError,
        "generation_id",
        ID_RULE,
    ),
    "hook_aget_generation_blank": (
        lambda: asyncio.run(_hook().aget_generation("   ")),
        KlingValidationError,
        "generation_id",
        ID_RULE,
    ),
    "hook_submit_not_a_mapping": (
        lambda: _hook().submit_generation("a cat turns its head"),  # type: ignore[arg-type]
        KlingValidationError,
        "request",
        "must be a mapping of fields",
    ),
    "hook_submit_unknown_field": (
        lambda: _hook().submit_generation(
            {
                "model": "kling-video/v1/standard/image-to-video",
                "image_url": "https://example.com/cat.png",
                "prompt": "a cat",
                "colour": "red",
            }
        ),
        KlingValidationError,
        "colour",
        "is not a field of model 'kling-video/v1/standard/image-to-video'; it takes: image_url, prompt",
    ),
    "trigger_crlf_id": (
        lambda: _trigger_event("gen_1\r\nX-Injected: 1"),
        None,
        "generation_id",
        ID_RULE,
    ),
    "trigger_conn_without_key": (
        lambda: _trigger_event(GOOD_ID, "kling_bad_no_key"),
        None,
        *NO_KEY,
    ),
    "hook_conn_without_key": (
        lambda: _hook("kling_bad_no_key").get_generation(GOOD_ID),
        KlingConfigError,
        *NO_KEY,
    ),
    "hook_conn_plain_http_remote_async": (
        lambda: asyncio.run(_hook("kling_bad_plain_http").aget_generation(GOOD_ID)),
        KlingConfigError,
        *PLAIN_HTTP,
    ),
    "hook_conn_ftp_host": (
        lambda: _hook("kling_bad_ftp_host").submit_generation(
            {
                "model": "kling-video/v1/standard/image-to-video",
                "image_url": "https://e.com/a.png",
                "prompt": "a",
            }
        ),
        KlingConfigError,
        "host 'ftp://api.example.com'",
        "is not an http(s) URL",
    ),
    "connection_test_without_key": (
        lambda: _hook("kling_bad_no_key").test_connection(),
        None,
        *NO_KEY,
    ),
}


@pytest.mark.parametrize("name", list(DIRECT_CASES))
def test_bad_input_direct(emulator: Any, name: str) -> None:
    call, error, field, allowed = DIRECT_CASES[name]
    for conn_id, fields in BAD_CONNECTIONS.items():
        set_connection(conn_id, **{"host": emulator.base_url, **fields})
    if error is not None:
        with pytest.raises(error) as info:
            call()
        message = str(info.value)
    else:
        result = call()
        if isinstance(result, tuple):  # test_connection: (ok, message)
            ok, message = result
            assert ok is False
        else:  # a trigger event: an error, final (a retry cannot fix the input)
            event = KlingTriggerEvent.model_validate(result)
            assert event.status == "error"
            assert event.retryable is False
            message = event.message
    assert field in message, message
    assert allowed in message, message
    assert API_KEY not in message
    assert emulator.count() == 0


@pytest.mark.parametrize("generation_id", ["../../etc/passwd", "gen_1&generation_id=gen_2", "task~7f3a@eu"])
def test_odd_ids_are_opaque_and_sent_as_one_value(emulator: Any, generation_id: str) -> None:
    """Ids are the service's, opaque (issue 10 #15): sent URL-encoded as one query value, never a path."""
    from airflow_provider_kling.exceptions import KlingNotFoundError

    with pytest.raises(KlingNotFoundError):
        _hook().get_generation(generation_id)
    (request,) = emulator.requests
    assert request.path == "/v2/generate/video/kling/generation"
    assert request.query == {"generation_id": generation_id}
