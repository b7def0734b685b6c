"""A local emulator of the Apilaplas/AIML Kling video API, for offline DAG development and tests.

It answers ``POST`` and ``GET ?generation_id=ID`` on both the legacy endpoint
``/v2/generate/video/kling/generation`` and the unified one ``/v2/video/generations`` (same protocol,
auth, faults and recording; a generation can be polled on either) with the service's documented shapes
(bearer auth, the service's 400/401/404 error body, ``queued`` -> ``generating`` ->
``completed``/``error``), serves a small playable MP4 as the finished video and records every request
(``RecordedRequest.path`` and ``.endpoint`` tell which endpoint was called).

The finished video matches the request when PyAV is installed (``pip install
'airflow-provider-kling[emulator]'``; ``make install`` does): its duration (``duration``, else the sum
of ``multi_prompt`` shot durations, an avatar's audio length when the audio is a data URI, else the
model's default; 3..15 s), its aspect ratio
(``aspect_ratio``; for image to video the input image's when it is a Base64 data URI, else 16:9), a
resolution class per model (1080p for ids saying so and for pro and master models, 720p otherwise)
scaled down by 5 at 8 frames per second (a 16:9 720p clip is 256x144, 1080p 384x216), and a quiet
500 Hz AAC tone when the model makes sound (``generate_audio``, true by default on v2.6 and v3), is
given it (avatar) or keeps it (``keep_audio``). Each distinct clip is encoded once (tens of
milliseconds) and cached in memory and in ``$KLING_EMULATOR_CLIP_CACHE`` (default
``~/.cache/airflow-provider-kling/emulator-clips``). Without PyAV every request gets the stock sample
MP4 (5 s, 320x240, silent). ``KlingEmulator.video_data(generation_id)`` returns the bytes served.

Bodies are checked against :mod:`airflow_provider_kling.catalog`: every catalog model and alias is
accepted; a retired one gets 400 ``Model ... is no longer supported``; a field the model does not take
gets 400 ``Body validation error: Unrecognized key(s) in object: 'field'``; a missing required field
``<field>: Required``; prompt/image_url must be strings and ``duration`` valid. On the legacy endpoint
the seed's models (catalog ``seed_names``) take the seed's names (``static_mask_url``,
``dynamic_masks[].mask_url``, duration ``"5"``/``"10"``); elsewhere the current ones (``static_mask``,
``mask``, an integer duration in the model's choices or range). A model id the catalog does not know is
accepted with any fields, as a newer service would.

The account side (:mod:`~airflow_provider_kling.emulator.account`, shapes of AIML's documentation):
``GET /v1/models?include=pricing`` (``&id=ID`` for one model or alias, a list possibly empty) and
``GET /model/ID?include=pricing`` (``{"object": "model", "data": ...}`` or 404) need no key and carry an
``ETag`` (304 on ``If-None-Match``); every current catalog model is priced, with the emulator's own
figures (:mod:`~airflow_provider_kling.emulator.pricing`, marked so in each model's ``info.note``) in
the three documented kinds (``variants`` per second by ``duration`` or ``generate_audio``, ``fixed``
per second or per generation, ``variable`` for avatars, motion control and video edit).
``GET /v2/usage`` and ``GET /v2/logs`` answer the key's spend and one row per submit (window
``period=24h`` or ``start``/``end``, at most 92 days; logs filter by repeated ``model`` and ``status``,
``limit`` 1..100, ``offset``, newest first, 200 requests per 60 s). Every answer carries
``x-inference-id`` (the generation id on submit and poll) and echoes a valid ``X-Client-Request-Id``
(1-128 of ``A-Z a-z 0-9 . _ : -``; an invalid one is dropped, the request still runs); JSON answers
carry ``x-aimlapi-credits-used`` and ``x-aimlapi-usd-spent`` (1 USD = 2,000,000 credits): the table's
bill on submit (the hold) and poll, 0 once a generation failed. In the ``2026`` answer style
``meta.usage`` carries the same figures; the ``2025`` styles keep their seed-era ``meta.usage``. A
spending limit answers 403 "You've run out of credits..." to a submit that would cross it.
``configure_account(...)`` (or ``POST /_emulator/account``, or the ``--account-off``, ``--logs-delay``,
``--usage-delay``, ``--spending-limit``, ``--spending-retention``, ``--logs-rate-limit`` flags) sets
them; ``reset()`` returns to the constructor's ``account`` settings::

    emu.configure_account(disabled=["logs"], logs_delay=5, spending_limit=2.0, spending_retention="day")

Developing DAGs offline
-----------------------
Start the emulator in a terminal (it prints ``Kling emulator listening on http://127.0.0.1:8642``)::

    python -m airflow_provider_kling.emulator --port 8642 --generation-seconds 20

Point the provider's connection at it, then run DAGs as usual (``airflow dags test ...``)::

    export AIRFLOW_CONN_KLING_DEFAULT='{"conn_type": "kling",
        "host": "http://127.0.0.1:8642", "password": "emulator-key"}'

The accepted key is ``emulator-key`` unless ``--api-key`` or ``KLING_EMULATOR_API_KEY`` says otherwise.
Other flags: ``--status-style documented|alternate``, ``--answer-style 2025|2026``,
``--id-style uuid|short|opaque|numeric``, ``--id-key id|generation_id``, ``--usage-style tokens|credits``,
``--video-bytes N`` (serve an N-byte blob instead of the clip) and ``--host``. ``--help`` lists
every fault kind, prompt marker and control route.

Answer styles: ``2025`` (default) answers ``<uuid>:<model>`` ids, ``{"tokens_used": N}`` usage and a
full ``video`` object (url, content_type, file_name, file_size, duration). ``2026`` answers 21-character
opaque ids (``QC4qjlUKt8ZedNi7r09LM``), ``{"credits_used": N, "usd_spent": N / 2_000_000}`` on submit
and poll, and ``video`` as ``{"url": ".../output.mp4?cacheKey=...&ksTime=..."}`` only. Omni models
(id containing ``omni``) answer ``video`` as a list of such objects in either style. ``id_style
"numeric"`` gives Kling task ids such as ``789339022468063304``.

Prompt markers choose how a generation ends (at the time it would otherwise complete); they are read
from ``prompt``, or from the first ``multi_prompt`` entry (a string or ``{"prompt": ...}``) when there
is no prompt:

- ``[error]`` in the prompt: status ``error`` with
  ``{"detail": [{"loc": ["body", "image_url"], "msg": "Could not detect face in the image", ...}]}``;
- ``[error:2026]``: status ``error`` with
  ``{"name": "ContentPolicyViolation", "message": "The prompt was rejected by the content policy"}``;
- ``[seconds:N]``: this generation finishes after N seconds instead of its share of
  ``--generation-seconds``.

``--generation-seconds`` is the time of a 5 s clip of a reference model (v1 standard, "about 4-5
minutes" on the service); other models take their documented times in proportion (v2/v2.1 master
5-6 minutes, v2.1 pro 3-4 minutes) and a 10 s clip twice a 5 s one. The usage is billed on the clip's
duration.

Control API (no auth), to drive an emulator running in another process::

    curl -s localhost:8642/_emulator/health                   # {"ok": true}
    curl -s localhost:8642/_emulator/counts                   # {"POST": 1, "GET": 4}, both endpoints
    curl -s localhost:8642/_emulator/requests                 # every recorded request (never the key)
    curl -s localhost:8642/_emulator/generations              # every generation's state
    curl -s -XPOST localhost:8642/_emulator/reset             # forget requests, generations, faults, scripts
    curl -s localhost:8642/_emulator/faults                   # pending faults, counts, random settings
    curl -s -XPOST localhost:8642/_emulator/faults -d '{"kind": "429", "retry_after": 2}'
    curl -s -XPOST localhost:8642/_emulator/faults \\
        -d '{"kind": "503", "retry_after": "Wed, 21 Oct 2026 07:28:00 GMT"}'
    curl -s -XPOST localhost:8642/_emulator/faults -d '{"kind": "503", "times": 3, "method": "GET"}'
    curl -s -XPOST localhost:8642/_emulator/faults \\
        -d '{"kind": "reset_mid", "path_prefix": "/_emulator/videos"}'
    curl -s -XPOST localhost:8642/_emulator/faults -d '{"kind": "huge", "size": 1000000}'
    curl -s -XPOST localhost:8642/_emulator/fault-rate -d '{"rate": 0.2, "kinds": ["502"], "seed": 1}'
    curl -s -XPOST localhost:8642/_emulator/script \\
        -d '{"method": "GET", "body": {"id": "x", "status": "completed", "video": {"url": "http://x/"}}}'
    curl -s localhost:8642/_emulator/script                   # pending scripted answers
    curl -s localhost:8642/_emulator/account                  # the account settings
    curl -s -XPOST localhost:8642/_emulator/account -d '{"disabled": ["logs"], "logs_delay": 5}'
    curl -s -XPOST "localhost:8642/_emulator/generations/$ID/complete"   # finish now
    curl -s -i "localhost:8642/_emulator/redirect?to=file:///etc/passwd"  # 302 to any URL
    curl -s -i "localhost:8642/_emulator/redirect?to=http://x/&hops=5"    # a chain of 5 redirects
    curl -s -o v.mp4 "localhost:8642/_emulator/videos/$TOKEN/output.mp4"  # a finished video (Range ok)
    curl -s -o b.bin localhost:8642/_emulator/blob/1000000    # N pattern bytes, see blob_bytes()

Fault kinds (``inject(kind, ...)`` or ``POST /_emulator/faults``; ``FAULT_HELP`` has one line each):
``403`` (no credits / no access), ``429`` (``retry_after`` adds ``Retry-After``: seconds, or a string
sent verbatim such as an HTTP-date; the same for the 5xx kinds), ``500``, ``502``, ``503``, ``504``,
``reset`` (connection dropped, no answer), ``reset_mid`` (headers and part of the body, then a TCP
reset), ``truncated`` (Content-Length larger than the body sent, then close), ``non_json`` (200 with an
HTML page), ``slow`` (wait ``delay`` seconds, then answer), ``wrong_length`` (a download short by
1000 bytes with a matching Content-Length: only comparing with ``file_size`` detects it), ``gzip``
(the answer gzip-compressed with ``Content-Encoding: gzip`` when the client's Accept-Encoding allows
it; Content-Length is the compressed size), ``dribble`` (the body a few bytes at a time, taking
``delay`` seconds in all) and ``huge`` (a 200 JSON answer of ``size`` bytes, default 80 MiB, streamed).
Without ``path_prefix`` a fault hits the API endpoints; on a POST the status faults happen before the
generation exists unless ``after_create`` is true. ``set_fault_rate`` also takes mappings such as
``{"kind": "429", "retry_after": 0.2, "method": "POST"}`` to mix faults per method, and
``queue_ids("x/../../etc")`` hands odd ids to the next generations created.

Scripted answers make the next matching answers anything at all (a hostile service): nothing else
happens for them (no auth, validation, generation or fault)::

    emu.script(method="GET", body={"id": "x", "status": 2, "video": {"url": {"a": 1}}})
    emu.script(method="POST", status=201, body={"id": "task~7f3a@eu", "status": "queued"})
    emu.script(method="GET", path_prefix="/_emulator/videos", body_bytes=b"junk", times=2)

In Python tests use it directly::

    with KlingEmulator(generation_seconds=0.2) as emu:
        hook_url = emu.base_url
        emu.inject("429", retry_after=1)
        ...
        assert emu.count("POST") == 2
"""

from __future__ import annotations

from airflow_provider_kling.emulator.constants import ANSWER_STYLES, API_PATH, API_PATHS, UNIFIED_PATH
from airflow_provider_kling.emulator.faults import FAULT_HELP, FAULT_KINDS
from airflow_provider_kling.emulator.media import blob_bytes
from airflow_provider_kling.emulator.server import KlingEmulator
from airflow_provider_kling.emulator.state import Generation, RecordedRequest
from airflow_provider_kling.emulator.validation import KNOWN_MODELS, validate_body

__all__ = [
    "ANSWER_STYLES",
    "API_PATH",
    "API_PATHS",
    "FAULT_HELP",
    "FAULT_KINDS",
    "KNOWN_MODELS",
    "UNIFIED_PATH",
    "Generation",
    "KlingEmulator",
    "RecordedRequest",
    "blob_bytes",
    "validate_body",
]
