"""The gallery's routes without a deployment: FastAPI's test client, the real app, Airflow's metadata DB.

The results come from a DAG run (tests/dags/kling_gallery_hostile.py) whose mapped task returned
Kling-shaped results naming files a task chose: the api-server's own files, traversals, symlinks out
of the streaming root, pages that would run script. Only the video under a configured root, with a
sidecar naming its generation, is ever opened. The signed-in user is set by overriding Airflow's
``get_user`` dependency; rights come from tests/support/auth_manager.py (the Simple auth manager plus
denials).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.dags import TEST_DAGS, load_dag_file, run_dag
from tests.support.gallery import OPENED, signed_in_gallery, watching_opens

pytestmark = pytest.mark.airflow3

DAG_ID = "kling_gallery_hostile"
SECRET = "fernet_key = do-not-serve-this"


def gallery_supported() -> bool:
    from airflow_provider_kling.plugins import supports_gallery

    return supports_gallery()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A streaming root with one proper video, and hostile files in and around it."""
    base = tmp_path_factory.mktemp("gallery")
    root, outside = base / "videos", base / "private"
    root.mkdir()
    outside.mkdir()
    video = root / "run1" / "clip.mp4"
    video.parent.mkdir()
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (root / "run1" / "clip.mp4.kling.json").write_text(json.dumps({"generation_id": "gen-ok"}))
    secret = outside / "airflow.cfg"
    secret.write_text(SECRET)
    link = root / "run1" / "link.mp4"
    link.symlink_to(secret)
    (root / "run1" / "link.mp4.kling.json").write_text(json.dumps({"generation_id": "gen-link"}))
    page = root / "run1" / "page.html"
    page.write_text("<script>document.title='owned'</script>")
    (root / "run1" / "page.html.kling.json").write_text(json.dumps({"generation_id": "gen-html"}))
    (root / "run1" / "bare.mp4").write_bytes(b"no sidecar")
    other = root / "run1" / "other.mp4"
    other.write_bytes(b"made by another generation")
    (root / "run1" / "other.mp4.kling.json").write_text(json.dumps({"generation_id": "gen-else"}))
    (root / "run1" / "folder.mp4").mkdir()
    (root / "run1" / "folder.mp4.kling.json").write_text(json.dumps({"generation_id": "gen-dir"}))
    return {"root": root, "outside": outside, "video": video, "secret": secret, "page": page}


def result(task: str, generation_id: str, video_path: str | None, video_url: str | None = None) -> dict:
    return {
        "generation_id": generation_id,
        "status": "completed",
        "model": "kling-video/v1.6/standard/text-to-video",
        "prompt": task,
        "video_path": video_path,
        "video_url": video_url,
    }


#: map index -> the result that mapped task returned (filled by the ``run`` fixture).
CASES: dict[str, int] = {}


@pytest.fixture(scope="module")
def run(airflow_db: Path, files: dict[str, Path]) -> Any:
    if not gallery_supported():
        pytest.skip("the gallery needs Airflow 3.1+")
    root, secret = files["root"], files["secret"]
    results = {
        "ok": result("ok", "gen-ok", str(files["video"])),
        "secret": result("secret", "gen-ok", str(secret)),
        "passwd": result("passwd", "gen-ok", "/etc/passwd"),
        "traversal": result("traversal", "gen-ok", f"{root}/run1/../../private/airflow.cfg"),
        "link": result("link", "gen-link", str(root / "run1" / "link.mp4")),
        "html": result("html", "gen-html", str(files["page"])),
        "bare": result("bare", "gen-ok", str(root / "run1" / "bare.mp4")),
        "other": result("other", "gen-ok", str(root / "run1" / "other.mp4")),
        "folder": result("folder", "gen-dir", str(root / "run1" / "folder.mp4")),
        "s3": result("s3", "gen-ok", "s3://aws_default@bucket/videos/clip.mp4"),
        "file_url": result("file_url", "gen-ok", f"file://{secret}"),
        "js": result("js", "gen-js", None, "javascript:alert(document.cookie)"),
        "signed": result("signed", "gen-url", None, "https://cdn.example.org/v.mp4?sig=1"),
    }
    CASES.update({name: i for i, name in enumerate(results)})
    module = load_dag_file(TEST_DAGS / "kling_gallery_hostile.py")
    done = run_dag(module.dag, run_conf={"results": list(results.values())})
    assert done.state == "success"
    return done


@pytest.fixture
def client(run: Any, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The gallery app signed in as ``viewer``, streaming from the files' root only."""
    with signed_in_gallery(monkeypatch, f"{files['root']}, s3://kling_s3@videos/out") as test_client:
        test_client.run_id = run.run_id  # type: ignore[attr-defined]
        yield test_client


def video(client: Any, case: str, **headers: str) -> Any:
    params = {"dag_id": DAG_ID, "run_id": client.run_id, "task_id": "report", "map_index": CASES[case]}
    with watching_opens():
        return client.get("/video", params=params, headers=headers)


def test_only_a_video_under_a_root_with_its_sidecar_is_streamed(client: Any, files: dict[str, Path]) -> None:
    body = files["video"].read_bytes()
    whole = video(client, "ok")
    assert whole.status_code == 200
    assert whole.content == body
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert whole.headers["content-security-policy"] == "sandbox; default-src 'none'"
    assert whole.headers["content-disposition"] == "inline"
    part = video(client, "ok", Range="bytes=100-199")
    assert part.status_code == 206
    assert part.content == body[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(body)}"

    for case in ("secret", "passwd", "traversal", "link", "bare", "other", "folder", "s3", "file_url"):
        OPENED.clear()
        refused = video(client, case)
        assert refused.status_code == 404, (case, refused.text)
        assert SECRET not in refused.text
        # Neither the api-server's file nor /etc/passwd is ever opened.
        assert not [p for p in OPENED if "airflow.cfg" in p or p == "/etc/passwd"], (case, OPENED)


def test_a_page_inside_a_root_is_served_as_inert_bytes(client: Any) -> None:
    served = video(client, "html")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["content-security-policy"] == "sandbox; default-src 'none'"


def test_the_dag_a_viewer_may_not_read_is_refused_before_any_file_is_opened(
    client: Any, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert video(client, "ok").status_code == 200
    monkeypatch.setenv("KLING_TEST_DENIED_DAGS", f"viewer:{DAG_ID}")
    OPENED.clear()
    denied = video(client, "ok")
    assert denied.status_code == 403
    assert not [p for p in OPENED if p.startswith(str(files["root"]))], OPENED
    listed = client.get("/api/generations", params={"dag_id": DAG_ID})
    assert listed.status_code == 200
    assert listed.json()["items"] == []


def test_nothing_is_streamed_when_no_root_is_configured(
    client: Any, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__KLING__GALLERY_ROOTS", "")
    OPENED.clear()
    off = video(client, "ok")
    assert off.status_code == 404
    assert "gallery_roots" in off.json()["detail"]
    assert not [p for p in OPENED if p.startswith(str(files["root"]))], OPENED
    items = client.get("/api/generations", params={"dag_id": DAG_ID, "per_page": 100}).json()
    assert items["streaming"] is False
    assert all(item["video_src"] is None for item in items["items"])
    page = client.get("/", params={"dag_id": DAG_ID, "per_page": 100})
    assert "gallery_roots" in page.text
    assert "<video" not in page.text


def test_the_listing_offers_a_player_only_for_streamable_videos_and_links_only_to_http(client: Any) -> None:
    items = client.get("/api/generations", params={"dag_id": DAG_ID, "per_page": 100}).json()["items"]
    by_task = {item["prompt"]: item for item in items}
    assert by_task["ok"]["video_src"]
    for case in ("secret", "passwd", "traversal", "s3", "file_url"):
        assert by_task[case]["video_src"] is None, case
    assert by_task["js"]["video_url"] is None
    assert by_task["signed"]["video_url"] == "https://cdn.example.org/v.mp4?sig=1"
    page = client.get("/", params={"dag_id": DAG_ID, "per_page": 100})
    assert "javascript:" not in page.text
    assert 'href="https://cdn.example.org/v.mp4?sig=1"' in page.text


def test_the_page_allows_only_its_own_script(client: Any) -> None:
    import re

    page = client.get("/", params={"dag_id": DAG_ID})
    policy = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce is not None
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'self'" in policy
    scripts = re.findall(r"<script([^>]*)>", page.text)
    assert scripts == [f' nonce="{nonce.group(1)}"']
    assert "onchange=" not in page.text
    again = client.get("/", params={"dag_id": DAG_ID}).headers["content-security-policy"]
    assert again != policy  # a new nonce per page


def test_range_numbers_too_long_to_parse_are_unsatisfiable(client: Any, files: dict[str, Path]) -> None:
    size = files["video"].stat().st_size
    for header in ("bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "1" * 40):
        answer = video(client, "ok", Range=header)
        assert answer.status_code == 416, header
        assert answer.headers["content-range"] == f"bytes */{size}"
