"""The provider in a real Airflow deployment: api-server, scheduler, dag-processor, triggerer.

Runs the example DAGs and a test DAG end to end through the REST API, shows the deferred tasks
waited in the real triggerer process, and checks what Airflow's CLI and API server see of the
provider (providers list/hooks/links, connection form metadata, the extra link).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.deployment import Deployment, RunWatch, deployment_fixture, wait_for  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.airflow3]

TRIGGER_CLASSPATH = "airflow_provider_kling.triggers.kling.KlingGenerationTrigger"
SENSOR_TRIGGER_PREFIX = "airflow_provider_kling.triggers.kling."
#: The catalog-era examples: (DAG, task, model, download folder).
CATALOG_EXAMPLES = (
    (
        "example_kling_v3_audio",
        "image_to_video_with_audio",
        "klingai/video-v3-pro-image-to-video",
        "v3_audio",
    ),
    ("example_kling_text_to_video", "text_to_video", "klingai/v2.5-turbo/pro/text-to-video", "text_to_video"),
    ("example_kling_avatar", "avatar", "klingai/avatar-pro", "avatar"),
)
EXAMPLES = (
    "example_kling_basic",
    "example_kling_chain",
    "example_kling_pipeline",
    "example_kling_sensor",
    *(dag_id for dag_id, *_ in CATALOG_EXAMPLES),
)


@pytest.fixture(scope="module")
def runs(deployment: Deployment) -> dict[str, RunWatch]:
    """Trigger the examples and the deploy test DAG together, then follow each run to its end."""
    # include_deferred: deferred tasks keep their slot, so the pool bounds generations in flight.
    pool = {"name": "kling", "slots": 2, "description": "Kling generations", "include_deferred": True}
    deployment.api("POST", "/pools", json=pool)
    run_ids = {dag_id: deployment.trigger(dag_id) for dag_id in (*EXAMPLES, "deploy_kling_deferrable")}
    # The asset producer is scheduled @daily: unpausing it makes the scheduler create its run.
    deployment.wait_dag("example_kling_daily_asset_consumer")
    deployment.api("PATCH", "/dags/example_kling_daily_asset", json={"is_paused": False})
    scheduled = wait_for(
        "the scheduler to create the daily asset run",
        lambda: deployment.api("GET", "/dags/example_kling_daily_asset/dagRuns")["dag_runs"],
        timeout=120,
    )
    run_ids["example_kling_daily_asset"] = scheduled[0]["dag_run_id"]
    with ThreadPoolExecutor(len(run_ids)) as pool:
        futures = {dag_id: pool.submit(deployment.watch_run, dag_id, rid) for dag_id, rid in run_ids.items()}
        return {dag_id: future.result() for dag_id, future in futures.items()}


def _result(deployment: Deployment, watch: RunWatch, task_id: str) -> dict[str, Any]:
    return deployment.xcoms(watch.dag_id, watch.run_id, task_id)["return_value"]


def _trigger_logs(
    deployment: Deployment, watch: RunWatch, task_id: str, map_index: int = -1
) -> dict[int, str]:
    """The trigger log files the triggerer wrote for one task, keyed by the triggerer's job id."""
    folder = deployment.task_logs / f"dag_id={watch.dag_id}" / f"run_id={watch.run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        folder = folder / f"map_index={map_index}"
    out = {}
    for path in folder.glob("attempt=*.log.trigger.*.log"):
        out[int(path.name.rsplit(".", 2)[-2])] = path.read_text()
    return out


def test_deferrable_task_waits_in_the_real_triggerer(
    deployment: Deployment, runs: dict[str, RunWatch]
) -> None:
    watch = runs["deploy_kling_deferrable"]
    assert watch.final_state == "success", deployment.describe_run(watch.dag_id, watch.run_id)
    key = ("generate", -1)
    assert watch.states[key] >= {"deferred", "success"}, watch.states
    # While deferred, the task instance held our trigger, owned by a TriggererJob.
    seen = watch.triggers[key]
    assert {t["classpath"] for t in seen} == {TRIGGER_CLASSPATH}
    jobs = {t["triggerer_job"]["id"] for t in seen if t["triggerer_job"]}
    assert jobs, seen

    generations = deployment.generations_for(watch.run_id)
    assert len(generations) == 1
    generation_id = generations[0]["id"]
    # The triggerer process wrote the trigger's own log lines, in a file named after its job id.
    trigger_logs = _trigger_logs(deployment, watch, "generate")
    assert set(trigger_logs) & jobs, (trigger_logs.keys(), jobs)
    text = "\n".join(trigger_logs.values())
    assert "KlingGenerationTrigger" in text
    assert f"Kling generation {generation_id} is completed" in text
    assert "Trigger fired event" in text
    triggerers = deployment.api("GET", "/jobs", params={"job_type": "TriggererJob"})["jobs"]
    assert {j["id"] for j in triggerers if j["state"] == "running"} & jobs
    # The task resumed after the event (same try) and finished: one POST, polls from the trigger.
    tries = deployment.tries(watch.dag_id, watch.run_id, "generate")
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "success")]
    log = deployment.task_log(watch.dag_id, watch.run_id, "generate", 1)
    assert "Pausing task as DEFERRED" in log
    assert deployment.posts_for(watch.run_id) == 1
    assert len(deployment.polls_for(generation_id)) >= 2

    result = _result(deployment, watch, "generate")
    assert result["generation_id"] == generation_id
    assert result["status"] == "completed"
    video = Path(result["video_path"])
    assert video.is_file()
    assert video.stat().st_size == result["file_size"] > 0


def test_extra_link_resolves_to_the_video(deployment: Deployment, runs: dict[str, RunWatch]) -> None:
    watch = runs["deploy_kling_deferrable"]
    links = deployment.api("GET", f"/dags/{watch.dag_id}/dagRuns/{watch.run_id}/taskInstances/generate/links")
    result = _result(deployment, watch, "generate")
    # A downloaded video's link is its gallery page (it lasts; the service's signed URL expires).
    query = urlencode({"dag_id": watch.dag_id, "run_id": watch.run_id, "task_id": "generate"})
    assert links["extra_links"] == {"Kling video": f"{deployment.base_url}/kling/?{query}"}
    assert result["video_url"].startswith(deployment.emulator_url)
    # The page plays the very file the task downloaded.
    listing = deployment.http.get(
        f"{deployment.base_url}/kling/api/generations?{query}",
        headers={"Authorization": f"Bearer {deployment.token()}"},
        timeout=30,
    ).json()
    (item,) = listing["items"]
    body = deployment.http.get(
        f"{deployment.base_url}{item['video_src']}",
        headers={"Authorization": f"Bearer {deployment.token()}"},
        timeout=30,
    ).content
    assert body == Path(result["video_path"]).read_bytes()


def test_example_basic(deployment: Deployment, runs: dict[str, RunWatch]) -> None:
    watch = runs["example_kling_basic"]
    assert watch.final_state == "success", deployment.describe_run(watch.dag_id, watch.run_id)
    assert "deferred" not in watch.states[("image_to_video", -1)]  # the example leaves deferrable off
    result = _result(deployment, watch, "image_to_video")
    assert result["status"] == "completed"
    video = Path(result["video_path"])
    assert video.parent == deployment.videos / "basic"
    assert video.stat().st_size == result["file_size"] > 0
    links = deployment.api(
        "GET", f"/dags/{watch.dag_id}/dagRuns/{watch.run_id}/taskInstances/image_to_video/links"
    )
    link = urlencode({"dag_id": watch.dag_id, "run_id": watch.run_id, "task_id": "image_to_video"})
    assert links["extra_links"]["Kling video"] == f"{deployment.base_url}/kling/?{link}"


def test_example_pipeline_maps_shots_in_the_kling_pool(
    deployment: Deployment, runs: dict[str, RunWatch]
) -> None:
    watch = runs["example_kling_pipeline"]
    assert watch.final_state == "success", deployment.describe_run(watch.dag_id, watch.run_id)
    # Before expansion the scheduler shows one unmapped placeholder (map_index -1).
    mapped = sorted(k for k in watch.states if k[0] == "generate" and k[1] >= 0)
    assert mapped == [("generate", 0), ("generate", 1), ("generate", 2)]
    for key in mapped:
        assert "deferred" in watch.states[key], watch.states
        assert {t["classpath"] for t in watch.triggers[key]} == {TRIGGER_CLASSPATH}
    tis = deployment.api("GET", f"/dags/{watch.dag_id}/dagRuns/{watch.run_id}/taskInstances")[
        "task_instances"
    ]
    assert {ti["pool"] for ti in tis if ti["task_id"] == "generate"} == {"kling"}
    assert len([ti for ti in tis if ti["task_id"] == "generate"]) == 3
    manifest = json.loads(Path(_result(deployment, watch, "write_manifest")).read_text())
    assert manifest["count"] == 3
    ids = {shot["generation_id"] for shot in manifest["videos"]}
    assert len(ids) == 3
    assert all(Path(shot["video_path"]).is_file() for shot in manifest["videos"])
    # Two slots: the third paid POST came only after one of the first two generations had finished.
    generations = deployment.emulator("GET", "/generations")
    first, second, third = sorted((generations[i] for i in ids), key=lambda g: g["created_at"])
    assert third["created_at"] >= min(first["ready_at"], second["ready_at"])


@pytest.mark.parametrize(("dag_id", "task_id", "model", "folder"), CATALOG_EXAMPLES)
def test_catalog_examples(
    deployment: Deployment, runs: dict[str, RunWatch], dag_id: str, task_id: str, model: str, folder: str
) -> None:
    watch = runs[dag_id]
    assert watch.final_state == "success", deployment.describe_run(watch.dag_id, watch.run_id)
    result = _result(deployment, watch, task_id)
    assert (result["status"], result["model"]) == ("completed", model)
    video = Path(result["video_path"])
    assert video.parent == deployment.videos / folder
    assert video.stat().st_size == result["file_size"] > 0
    posts = [
        r
        for r in deployment.emulator("GET", "/requests")
        if r["method"] == "POST" and isinstance(r["json"], dict) and r["json"].get("model") == model
    ]
    assert len(posts) == 1


def test_example_chain_feeds_the_clip_to_the_edit(deployment: Deployment, runs: dict[str, RunWatch]) -> None:
    watch = runs["example_kling_chain"]
    assert watch.final_state == "success", deployment.describe_run(watch.dag_id, watch.run_id)
    clip, restyle = _result(deployment, watch, "clip"), _result(deployment, watch, "restyle")
    assert Path(clip["video_path"]).parent == deployment.videos / "chain" / "clips"
    assert Path(restyle["video_path"]).parent == deployment.videos / "chain" / "edits"
    assert Path(restyle["video_path"]).stat().st_size == restyle["file_size"] > 0
    sent = [r for r in deployment.emulator("GET", "/requests") if r["method"] == "POST"]
    (edit,) = [r for r in sent if isinstance(r["json"], dict) and r["json"].get("model") == restyle["model"]]
    # The edit was sent the first clip's video (the service's URL of it: stored locally, no staging).
    assert edit["json"]["video_url"].split("?")[0] == clip["video_url"].split("?")[0]


def test_example_sensor_waits_in_the_triggerer(deployment: Deployment, runs: dict[str, RunWatch]) -> None:
    watch = runs["example_kling_sensor"]
    assert watch.final_state == "success", deployment.describe_run(watch.dag_id, watch.run_id)
    # The sensor polls once before deferring: on a loaded machine the generation may already be done
    # (and the task may even start and end between two of the watcher's reads: no state seen at all).
    log = deployment.task_log(watch.dag_id, watch.run_id, "wait_for_video", 1)
    if "deferred" not in watch.states.get(("wait_for_video", -1), set()):
        assert "is completed" in log, log[-2000:]
    assert all(
        t["classpath"].startswith(SENSOR_TRIGGER_PREFIX)
        for t in watch.triggers.get(("wait_for_video", -1), [])
    )
    generation_id = deployment.xcoms(watch.dag_id, watch.run_id, "submit")["generation_id"]
    assert _result(deployment, watch, "wait_for_video")["generation_id"] == generation_id
    downloaded = Path(_result(deployment, watch, "download"))
    assert downloaded.is_file()
    assert downloaded.stat().st_size > 0
    if "deferred" in watch.states[("wait_for_video", -1)]:
        assert generation_id in "\n".join(_trigger_logs(deployment, watch, "wait_for_video").values())


def test_example_daily_asset_triggers_its_consumer(deployment: Deployment, runs: dict[str, RunWatch]) -> None:
    watch = runs["example_kling_daily_asset"]
    assert watch.final_state == "success", deployment.describe_run(watch.dag_id, watch.run_id)
    assert deployment.run(watch.dag_id, watch.run_id)["run_type"] == "scheduled"
    produced = _result(deployment, watch, "daily_clip")

    def consumer_done() -> dict[str, Any] | None:
        body = deployment.api("GET", "/dags/example_kling_daily_asset_consumer/dagRuns")
        done = [r for r in body["dag_runs"] if r["state"] in ("success", "failed")]
        return done[0] if done else None

    consumer = wait_for("the asset consumer run", consumer_done, timeout=180)
    assert consumer["state"] == "success", deployment.describe_run(consumer["dag_id"], consumer["dag_run_id"])
    assert consumer["run_type"] == "asset_triggered"
    published = deployment.xcoms(consumer["dag_id"], consumer["dag_run_id"], "publish_latest")["return_value"]
    assert published["generation_id"] == produced["generation_id"]
    assert published["source"] == produced["video_path"]
    assert Path(published["published"]).read_bytes() == Path(produced["video_path"]).read_bytes()


def test_cli_shows_the_provider(deployment: Deployment) -> None:
    commands = {
        "list": ("providers", "list", "-o", "json"),
        "hooks": ("providers", "hooks", "-o", "json"),
        "links": ("providers", "links", "-o", "json"),
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        done = {name: pool.submit(deployment.airflow, *args) for name, args in commands.items()}
        out = {name: future.result() for name, future in done.items()}
    for name, proc in out.items():
        assert proc.returncode == 0, (name, proc.stderr[-2000:])
    parsed = {name: json.loads(proc.stdout[proc.stdout.index("[") :]) for name, proc in out.items()}
    assert {"package_name": "airflow-provider-kling", "version": "0.1.0"}.items() <= next(
        p for p in parsed["list"] if p["package_name"] == "airflow-provider-kling"
    ).items()
    hook = next(h for h in parsed["hooks"] if h["connection_type"] == "kling")
    assert hook["class"] == "airflow_provider_kling.hooks.kling.KlingHook"
    assert hook["package_name"] == "airflow-provider-kling"
    assert {"extra_link_class_name": "airflow_provider_kling.links.kling.KlingVideoLink"} in parsed["links"]


def test_connection_form_metadata(deployment: Deployment) -> None:
    # What the connection form is built from: the UI's hook metadata endpoint.
    meta = deployment.api("GET", "/connections/hook_meta", prefix="/ui")
    kling = next(m for m in meta if m["connection_type"] == "kling")
    assert kling["hook_name"] == "Kling"
    assert kling["hook_class_name"] == "airflow_provider_kling.hooks.kling.KlingHook"
    fields = kling["standard_fields"]
    assert fields["password"]["title"] == "API Key"
    assert fields["password"]["hidden"] is False
    assert fields["host"]["title"] == "API base URL"
    assert fields["login"]["hidden"] is True
    assert fields["port"]["hidden"] is True


def test_connection_test_through_the_api(deployment: Deployment) -> None:
    """The API server runs the hook's test_connection against the emulator (test_connection enabled)."""
    body = {
        "connection_id": "kling_probe",
        "conn_type": "kling",
        "host": deployment.emulator_url,
        "password": deployment.api_key,
    }
    ok = deployment.api("POST", "/connections/test", json=body)
    assert ok["status"] is True, ok
    refused = deployment.api("POST", "/connections/test", json={**body, "password": "not-the-key"})
    assert refused["status"] is False
    assert "not-the-key" not in refused["message"]
    assert deployment.api_key not in json.dumps(refused)
