"""Signed URLs stay out of errors, batch results and trigger events; a video URL is http(s) or nothing.

The service may echo a presigned input URL (its signature in the query string) in an error; the
triggerer logs every event and Airflow stores it. Each test drives the emulator over real sockets
(scripted answers for the service's odd ones) and searches everything the provider kept.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from airflow_provider_kling.exceptions import (
    KlingAPIError,
    KlingBadRequestError,
    KlingGenerationFailed,
    KlingServerError,
)
from airflow_provider_kling.hooks.kling import raise_for_terminal
from airflow_provider_kling.models import Generation, GenerationStatus
from tests.support.hooks import MODEL, REQUEST, make_hook

SIGNATURE = "5e1f0c9d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e"
CREDENTIAL = "AKIAIOSFODNN7EXAMPLE"
SIGNED_IMAGE = (
    "https://bucket.s3.amazonaws.com/img.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={CREDENTIAL}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    f"&X-Amz-Expires=900&X-Amz-Signature={SIGNATURE}"
)
PASSWORD = "userinfo-pass-9c1d"
#: The three shapes a service error takes: its JSON message, a validation list, a plain-text page.
ERROR_ANSWERS = {
    400: {
        "body": {
            "message": f"Could not fetch image_url {SIGNED_IMAGE} (also tried https://u:{PASSWORD}@cdn.example/x)",
            "requestId": f"req-{uuid.uuid4()}",
            "statusCode": 400,
        }
    },
    422: {
        "body": {
            "detail": [
                {"loc": ["body", "image_url"], "msg": "image could not be downloaded", "input": SIGNED_IMAGE}
            ]
        }
    },
    500: {
        "body_bytes": f"<html>upstream error fetching {SIGNED_IMAGE}</html>".encode(),
        "headers": {"Content-Type": "text/html"},
    },
}


def everything_in(exc: BaseException) -> str:
    """str, repr, args and every attribute of an exception (and its context), as one text."""
    parts = [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None:
            parts += [str(linked), repr(linked), repr(vars(linked))]
    return "\n".join(parts)


def assert_no_secret(text: str) -> None:
    assert SIGNATURE not in text
    assert CREDENTIAL not in text
    assert PASSWORD not in text


# ----------------------------------------------------------------------------- 1. API errors
@pytest.mark.parametrize("status", [400, 422, 500])
def test_an_error_echoing_a_presigned_url_keeps_no_signature(emulator: Any, status: int) -> None:
    emulator.script(method="POST", status=status, **ERROR_ANSWERS[status])

    with pytest.raises(KlingAPIError) as info:
        make_hook().submit_generation(REQUEST)

    err = info.value
    assert err.status_code == status
    assert isinstance(err, {400: KlingBadRequestError, 422: KlingAPIError, 500: KlingServerError}[status])
    assert_no_secret(everything_in(err))
    # What the user needs is still there: the URL up to its query string, and where it was.
    assert "https://bucket.s3.amazonaws.com/img.png?<redacted>" in err.message
    assert "https://bucket.s3.amazonaws.com/img.png?<redacted>" in str(err)
    if status == 400:
        assert err.request_id == ERROR_ANSWERS[400]["body"]["requestId"]
        assert "https://<redacted>@cdn.example/x" in err.message


def test_an_error_on_a_poll_keeps_no_signature(emulator: Any) -> None:
    emulator.script(method="GET", status=500, times=None, **ERROR_ANSWERS[500])
    with pytest.raises(KlingServerError) as info:
        make_hook(max_attempts=2).get_generation("gen-1")
    assert_no_secret(everything_in(info.value))


def test_a_failed_generation_whose_reason_echoes_the_url_keeps_no_signature(emulator: Any) -> None:
    emulator.script(
        method="GET",
        body={"id": "gen-2", "status": "error", "error": {"name": "FetchError", "message": SIGNED_IMAGE}},
    )
    generation = make_hook().get_generation("gen-2")
    assert generation.status is GenerationStatus.FAILED
    assert generation.error is not None
    assert_no_secret(generation.model_dump_json())
    with pytest.raises(KlingGenerationFailed) as info:
        raise_for_terminal(generation)
    assert_no_secret(everything_in(info.value))
    # Even built by hand, the exception keeps the reason without its signature.
    assert_no_secret(everything_in(KlingGenerationFailed("gen-2", f"could not read {SIGNED_IMAGE}")))


class _TI:
    """What the batch reads of a task instance when it runs outside a DAG run."""

    dag_id = "kling_batch_signed"
    task_id = "batch"
    map_index = -1
    try_number = 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


@pytest.mark.parametrize("status", [400, 500])
def test_a_batch_rows_stored_error_keeps_no_signature(emulator: Any, tmp_path: Path, status: int) -> None:
    from airflow_provider_kling.operators.kling import KlingBatchVideoOperator

    emulator.configure_account(disabled=["logs"])  # a 500 row stays unknown (not looked up for minutes)
    emulator.script(method="POST", status=status, **ERROR_ANSWERS[status])
    op = KlingBatchVideoOperator(
        task_id="batch",
        manifest=[{"key": "row-0", "image_url": "https://images.example.org/a.png", "prompt": "signed"}],
        output_prefix=str(tmp_path / "out"),
        deferrable=False,
        poll_interval=0.2,
        fail_on_partial_error=False,
    )
    ti = _TI()
    summary = op.execute({"ti": ti, "run_id": "manual__signed"})  # type: ignore[arg-type]

    assert summary["failed"] == 1
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert row["key"] == "row-0"
    assert "img.png?<redacted>" in row["error"]
    # Nothing the batch kept (results, its state objects, XComs) holds the signature.
    kept = [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert kept
    assert_no_secret("\n".join(kept) + json.dumps([summary, ti.pushed], default=str))


# ----------------------------------------------------------------------------- 2. trigger events
def signed_video_url(emulator: Any, size: int = 3000) -> str:
    """A video URL usable only with its query string: the emulator redirects to the video from it."""
    blob = f"{emulator.base_url}/_emulator/blob/{size}"
    return f"{emulator.base_url}/_emulator/redirect?to={quote(blob, safe='')}&X-Amz-Signature={SIGNATURE}"


def completed(generation_id: str, url: str, size: int = 3000) -> dict[str, Any]:
    return {
        "id": generation_id,
        "status": "completed",
        "video": {"url": url, "file_name": "output.mp4", "file_size": size},
    }


def test_a_success_event_carries_no_signature(emulator: Any) -> None:
    from airflow_provider_kling.operators.kling import generation_from_event
    from airflow_provider_kling.triggers.kling import KlingGenerationTrigger, KlingTriggerEvent

    gen_id = "gen-signed-event"
    url = signed_video_url(emulator)
    emulator.script(method="GET", body={"id": gen_id, "status": "generating"})
    emulator.script(method="GET", body=completed(gen_id, url), times=None)
    trigger = KlingGenerationTrigger(gen_id, poll_interval=0.05, end_time=time.time() + 30)

    async def run() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (payload,) = asyncio.run(run())
    assert payload["status"] == "success"
    text = json.dumps(payload)
    assert_no_secret(text)
    assert "X-Amz-Signature" not in text
    # It still says which video, up to its query string, and stays valid on the task's side.
    event = KlingTriggerEvent.model_validate(payload)
    assert event.generation is not None
    assert event.generation.video_url == url.split("?", 1)[0] + "?<redacted>"
    assert emulator.count("GET") == 2

    # The resuming task reads the generation once more (one GET) for the URL it downloads from.
    generation = generation_from_event(payload, 30, make_hook())
    assert generation.video_url == url
    assert emulator.count("GET") == 3
    # An event from an earlier release (its URL signed) is cleaned when read, too.
    old = {**payload, "generation": completed(gen_id, url)}
    old["generation"] = Generation.from_api(old["generation"]).model_dump(mode="json")
    assert_no_secret(KlingTriggerEvent.model_validate(old).model_dump_json())


def _run_signed_dag(emulator: Any, name: str) -> Any:
    from tests.support.dags import TEST_DAGS, load_dag_file, run_dag

    module = load_dag_file(TEST_DAGS / "kling_signed_urls.py")
    return run_dag(getattr(module, name))


def _signed_generation(emulator: Any, out: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """The id the emulator gives the next generation and a signed video URL; the DAGs write to ``out``."""
    monkeypatch.setenv("KLING_TEST_OUT", str(out))
    gen_id = f"{uuid.uuid4()}:{MODEL}"
    url = signed_video_url(emulator)
    emulator.queue_ids(gen_id)
    return gen_id, url


@pytest.mark.airflow3  # dag.test() from a bundle
@pytest.mark.airflow33
def test_a_deferred_operator_downloads_from_the_url_read_again_on_resume(
    emulator: Any, airflow_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_kling.emulator import blob_bytes

    gen_id, url = _signed_generation(emulator, tmp_path, monkeypatch)
    emulator.script(method="GET", body=completed(gen_id, url), times=None)

    result = _run_signed_dag(emulator, "operator_dag")

    assert result.state == "success"
    assert result.events[("deferred_download", -1)] == ["running", "deferred", "running", "success"]
    out = result.xcom("deferred_download")
    assert out["generation_id"] == gen_id
    assert out["video_url"] == url  # the usable URL, read again by the task
    assert Path(out["video_path"]).read_bytes() == blob_bytes(0, 3000)
    # One poll by the trigger, one read by the resumed task.
    polls = [r for r in emulator.requests if r.method == "GET" and r.query.get("generation_id") == gen_id]
    assert len(polls) == 2
    assert_no_secret(json.dumps(list(result.triggers.values()), default=str))


@pytest.mark.airflow3
@pytest.mark.airflow33
def test_a_deferred_sensor_returns_the_url_read_again_on_resume(
    emulator: Any, airflow_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen_id, url = _signed_generation(emulator, tmp_path, monkeypatch)
    # The sensor's first poke sees a status word the provider does not know (pending), so it defers.
    emulator.script(method="GET", body={"id": gen_id, "status": "rendering"})
    emulator.script(method="GET", body=completed(gen_id, url), times=None)

    result = _run_signed_dag(emulator, "sensor_dag")

    assert result.state == "success"
    assert "deferred" in result.events[("wait", -1)]
    out = result.xcom("wait")
    assert (out["generation_id"], out["status"], out["video_url"]) == (gen_id, "completed", url)
    assert result.xcom("wait", key="kling_video_url") == url


# ----------------------------------------------------------------------------- 3. http(s) only
@pytest.mark.parametrize(
    "bad",
    [
        "javascript:alert(1)",
        "JavaScript:alert(document.cookie)",
        "java\tscript:alert(1)",
        " javascript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "file:///etc/passwd",
        "ftp://example.com/v.mp4",
        "//evil.example/v.mp4",
        "https://",
        "https://exa mple.com/v.mp4",
    ],
)
def test_a_video_url_that_is_not_http_is_no_url(bad: str) -> None:
    body = completed("gen-3", bad)
    generation = Generation.from_api(body)
    assert generation.status is GenerationStatus.COMPLETED
    assert generation.video_url is None
    assert generation.video_urls == []
    assert bad.strip() not in generation.model_dump_json()
    # A list (v3 omni): the bad one is dropped, a good one kept.
    good = "https://cdn.example.com/v.mp4?sig=1"
    listed = Generation.from_api({**body, "video": [{"url": bad}, {"url": good}]})
    assert (listed.video_url, listed.video_urls) == (good, [good])
    # Built by hand (as from an event), the same rule holds.
    by_hand = Generation(id="g", status=GenerationStatus.COMPLETED, video_url=bad, video_urls=[bad])
    assert (by_hand.video_url, by_hand.video_urls) == (None, [])


def test_the_hook_gives_no_url_for_a_javascript_video(emulator: Any) -> None:
    emulator.script(method="GET", body=completed("gen-4", "javascript:alert(1)"))
    generation = make_hook().get_generation("gen-4")
    assert generation.status is GenerationStatus.COMPLETED
    assert generation.video_url is None
    assert "javascript" not in generation.model_dump_json()
