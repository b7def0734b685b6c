"""A local emulator of the Apilaplas Kling image-to-video API, for offline DAG development and tests.

It answers ``POST`` and ``GET /v2/generate/video/kling/generation`` with the service's documented
shapes (bearer auth, the service's 400/401/404 error body, ``queued`` -> ``generating`` ->
``completed``/``error``), serves a small playable MP4 as the finished video and records every request.

Developing DAGs offline
-----------------------
Start the emulator in a terminal (it prints ``Kling emulator listening on http://127.0.0.1:8642``)::

    python -m airflow_provider_kling.emulator --port 8642 --generation-seconds 20

Point the provider's connection at it, then run DAGs as usual (``airflow dags test ...``)::

    export AIRFLOW_CONN_KLING_DEFAULT='{"conn_type": "kling",
        "host": "http://127.0.0.1:8642", "password": "emulator-key"}'

The accepted key is ``emulator-key`` unless ``--api-key`` or ``KLING_EMULATOR_API_KEY`` says otherwise.
Other flags: ``--status-style documented|alternate``, ``--id-style uuid|short``,
``--id-key id|generation_id``, ``--usage-style tokens|credits``, ``--video-bytes N`` (serve an N-byte
blob instead of the sample MP4) and ``--host``.

Prompt markers choose how a generation ends (at the time it would otherwise complete):

- ``[error]`` in the prompt: status ``error`` with
  ``{"detail": [{"loc": ["body", "image_url"], "msg": "Could not detect face in the image", ...}]}``;
- ``[error:2026]``: status ``error`` with
  ``{"name": "ContentPolicyViolation", "message": "The prompt was rejected by the content policy"}``;
- ``[seconds:N]``: this generation finishes after N seconds instead of ``--generation-seconds``.

Control API (no auth), to drive an emulator running in another process::

    curl -s localhost:8642/_emulator/counts                   # {"POST": 1, "GET": 4}
    curl -s localhost:8642/_emulator/requests                 # every recorded request (never the key)
    curl -s -XPOST localhost:8642/_emulator/reset             # forget requests, generations, faults
    curl -s -XPOST localhost:8642/_emulator/faults -d '{"kind": "429", "retry_after": 2}'
    curl -s -XPOST localhost:8642/_emulator/faults -d '{"kind": "503", "times": 3, "method": "GET"}'
    curl -s -XPOST localhost:8642/_emulator/faults \\
        -d '{"kind": "reset_mid", "path_prefix": "/_emulator/videos"}'
    curl -s -XPOST localhost:8642/_emulator/fault-rate -d '{"rate": 0.2, "kinds": ["502"], "seed": 1}'
    curl -s -XPOST "localhost:8642/_emulator/generations/$ID/complete"   # finish now
    curl -s -i "localhost:8642/_emulator/redirect?to=file:///etc/passwd"  # 302 to any URL

Fault kinds: ``403`` (no credits / no access), ``429`` (``retry_after`` adds ``Retry-After``),
``500``, ``502``, ``503``, ``504``,
``reset`` (connection dropped, no answer), ``reset_mid`` (headers and part of the body, then a TCP
reset), ``truncated`` (Content-Length larger than the body sent, then close), ``non_json`` (200 with an
HTML page), ``slow`` (wait ``delay`` seconds, then answer) and ``wrong_length`` (a download short by
1000 bytes with a matching Content-Length: only comparing with ``file_size`` detects it). Without
``path_prefix`` a fault hits the API endpoint; on a POST the status faults happen before the generation
exists unless ``after_create`` is true. ``set_fault_rate`` also takes mappings such as
``{"kind": "429", "retry_after": 0.2, "method": "POST"}`` to mix faults per method, and
``queue_ids("x/../../etc")`` hands odd ids to the next generations created.

In Python tests use it directly::

    with KlingEmulator(generation_seconds=0.2) as emu:
        hook_url = emu.base_url
        emu.inject("429", retry_after=1)
        ...
        assert emu.count("POST") == 2
"""

from __future__ import annotations

from airflow_provider_kling.emulator.app import (
    API_PATH,
    FAULT_KINDS,
    KNOWN_MODELS,
    Generation,
    KlingEmulator,
    RecordedRequest,
    blob_bytes,
    validate_body,
)

__all__ = [
    "API_PATH",
    "FAULT_KINDS",
    "KNOWN_MODELS",
    "Generation",
    "KlingEmulator",
    "RecordedRequest",
    "blob_bytes",
    "validate_body",
]
