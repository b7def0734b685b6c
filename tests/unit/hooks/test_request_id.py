"""Client request ids: built from the task, never the try, and never silently dropped by the service.

The service drops an ``X-Client-Request-Id`` outside 1-128 of ``A-Z a-z 0-9 . _ : -`` without a word
(the request still runs and is billed, untraceable). Hypothesis is not installed, so a table of
hostile DAG, task, run and row ids stands in for a property test: every id built from them is sent
through the hook to the emulator over a real socket, which must echo it (and log it) unchanged.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import requests

from airflow_provider_kling.emulator import API_PATH
from airflow_provider_kling.hooks._request_id import CLIENT_REQUEST_ID, client_request_id
from tests.support.connections import API_KEY
from tests.support.hooks import REQUEST, make_hook

HOSTILE = [
    "plain_dag",
    "",
    " ",
    "with spaces and\ttabs\nnewlines",
    "slashes/and\\backslashes/../..",
    "colons:and:more:colons",
    "ünïcødé-ダグ-🎬",
    "quotes'\"`;--",
    "%2F%00nul\x00byte",
    "x" * 500,
    "manual__2026-01-01T00:00:00+00:00",
    "scheduled__2026-12-06T16:09:30.123456+00:00",
    ".",
    "-",
    "a=b,c=d|e",
]
FINGERPRINT = "0123456789abcdef0123456789abcdef"


def _ids() -> list[dict[str, Any]]:
    cases = []
    for dag, task in itertools.product(HOSTILE, ["t", "ünï/cødé task", "y" * 300]):
        cases.append({"dag_id": dag, "task_id": task, "run_id": dag[::-1], "map_index": -1})
    for run, key in itertools.product(HOSTILE, [None, "row 1", "ключ/строки", "k" * 500]):
        cases.append({"dag_id": "d", "task_id": "t", "run_id": run, "map_index": 7, "row_key": key})
    return cases


CASES = _ids()


def test_every_id_fits_the_documented_alphabet_and_length() -> None:
    built = [client_request_id(fingerprint=FINGERPRINT, **case) for case in CASES]
    for case, value in zip(CASES, built, strict=True):
        assert CLIENT_REQUEST_ID.fullmatch(value), (case, value)
    # Inputs that differ only in the characters replaced (or past the cut) still get distinct ids.
    assert len(set(built)) == len({repr(sorted(c.items())) for c in CASES})


def test_the_id_names_its_task_and_leaves_the_try_out() -> None:
    parts = {"dag_id": "nightly", "task_id": "render", "run_id": "manual__1", "map_index": 3}
    one = client_request_id(fingerprint=FINGERPRINT, row_key="shot-7", **parts)
    assert one.startswith("kl:nightly:render:manual__1:3:shot-7:")
    assert one == client_request_id(fingerprint=FINGERPRINT, row_key="shot-7", **parts)
    # Another row, map index or request is another id.
    assert one != client_request_id(fingerprint=FINGERPRINT, row_key="shot-8", **parts)
    assert one != client_request_id(fingerprint=FINGERPRINT[::-1], row_key="shot-7", **parts)
    assert one != client_request_id(fingerprint=FINGERPRINT, row_key="shot-7", **{**parts, "map_index": 4})


def test_the_emulator_echoes_and_logs_every_id_the_hook_sends(emulator: Any) -> None:
    """A POST through the hook per hostile case: the service kept its id (no silent drop)."""
    sample = CASES[:: max(1, len(CASES) // 40)]  # ~40 POSTs: every hostile value appears at least once
    assert {c["dag_id"] for c in sample} | {c["run_id"] for c in sample} >= set(HOSTILE)
    sent = []
    with make_hook() as hook:
        for case in sample:
            crid = client_request_id(fingerprint=FINGERPRINT, **case)
            hook.submit(REQUEST, client_request_id=crid)
            sent.append(crid)
    posts = [r for r in emulator.requests if r.method == "POST"]
    assert [r.client_request_id for r in posts] == sent
    assert sorted(row["client_request_id"] for row in emulator.log_rows) == sorted(sent)


@pytest.mark.parametrize("case", [CASES[0], CASES[-1]], ids=["short", "long"])
def test_the_echo_header_comes_back_unchanged(emulator: Any, case: dict[str, Any]) -> None:
    crid = client_request_id(fingerprint=FINGERPRINT, **case)
    resp = requests.post(
        emulator.base_url + API_PATH,
        json=REQUEST,
        headers={"Authorization": f"Bearer {API_KEY}", "X-Client-Request-Id": crid},
        timeout=5,
    )
    assert resp.status_code in (200, 201), resp.text
    assert resp.headers["x-client-request-id"] == crid
