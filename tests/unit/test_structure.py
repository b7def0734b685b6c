"""Cheap structural guards for the performance properties the benchmarks measure (see PERFORMANCE.md).

They check shapes, not timings: what a DAG file's import pulls in, how many connection lookups
triggers starting together make, and whether a successful poll leaves garbage for the cycle collector.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from airflow_provider_kling.hooks.kling import GENERATION_PATH, KlingHook
from tests.support.connections import API_KEY

MODEL = "kling-video/v1/standard/image-to-video"
REQUEST = {"model": MODEL, "image_url": "https://example.com/cat.png", "prompt": "a cat turns its head"}

# Modules a DAG file must not pay for at parse time: HTTP clients, retry machinery, the hook and model.
PARSE_TIME_FORBIDDEN = (
    "requests",
    "urllib3",
    "aiohttp",
    "tenacity",
    "airflow_provider_kling.hooks.kling",
    "airflow_provider_kling.hooks._transport",
    "airflow_provider_kling.hooks._retry",
    "airflow_provider_kling.hooks._download",
    "airflow_provider_kling.models",
    "airflow_provider_kling.schemas.request",
    "airflow_provider_kling.schemas.media",
    "airflow_provider_kling.schemas.file_inputs",
    "airflow_provider_kling.batch",
    "airflow_provider_kling.batch.run",
    "airflow_provider_kling.triggers.kling",
)

_IMPORT_SCRIPT = """
import json, sys
try:
    from airflow.sdk import BaseOperator
except ImportError:  # Airflow 2
    from airflow.models.baseoperator import BaseOperator
before = set(sys.modules)
import {module}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.mark.parametrize(
    "module", ["airflow_provider_kling.operators.kling", "airflow_provider_kling.sensors.kling"]
)
def test_dag_parse_imports_no_http_client(module: str) -> None:
    # A fresh interpreter: this test process has long imported everything.
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_SCRIPT.format(module=module)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    added = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert module in added
    assert sorted(added & set(PARSE_TIME_FORBIDDEN)) == []


@pytest.mark.airflow3
@pytest.mark.airflow31
async def test_hooks_starting_together_read_the_connection_once(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.definitions.connection import Connection

    lookups: list[str] = []
    original = Connection.async_get.__func__  # type: ignore[attr-defined]

    async def counting(cls: type[Connection], conn_id: str) -> Connection:
        lookups.append(conn_id)
        return await original(cls, conn_id)

    # A spy on Airflow's lookup: it still does the real work.
    monkeypatch.setattr(Connection, "async_get", classmethod(counting))
    hooks = [KlingHook() for _ in range(25)]
    endpoints = await asyncio.gather(*(hook.aendpoint() for hook in hooks))
    assert lookups == ["kling_default"]
    assert {e.base_url for e in endpoints} == {emulator.base_url}

    # A hook that starts after the lookup finished reads the connection afresh.
    await KlingHook().aendpoint()
    assert lookups == ["kling_default", "kling_default"]


async def test_a_successful_poll_leaves_no_garbage_cycles(emulator: Any) -> None:
    """Full GC passes over a triggerer's heap stall every trigger: polls must not feed them."""
    hook = KlingHook()
    generation_id = hook.submit_generation(REQUEST)
    polls = 40
    url = emulator.base_url + GENERATION_PATH
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def cycles_left_by(poll: Any) -> int:
        for _ in range(5):  # warm up: connections, lazy imports, caches
            await poll()
        gc.collect()
        gc.disable()
        try:
            for _ in range(polls):
                await poll()
            return gc.collect()
        finally:
            gc.enable()

    async with aiohttp.ClientSession() as session:

        async def bare() -> None:
            params = {"generation_id": generation_id}
            async with session.get(url, params=params, headers=headers) as resp:
                await resp.json()

        # The emulator serves from a thread of this process: its own garbage is the baseline.
        baseline = await cycles_left_by(bare)

    async with hook.async_session():
        ours = await cycles_left_by(lambda: hook.aget_generation(generation_id))

    # Less than one object per poll beyond the bare client (a retry loop per poll left about 40).
    assert ours - baseline < polls, (ours, baseline)
