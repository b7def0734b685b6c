"""The service's API: ``POST`` creates a generation, ``GET ?generation_id=ID`` polls it.

Both endpoints (legacy and unified) share these handlers: bearer auth, body validation, the
generation's creation and its answer in the chosen ``status_style``/``answer_style``.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import string
import time
import uuid
from typing import Any

from aiohttp import web

from airflow_provider_kling import catalog
from airflow_provider_kling.emulator import pricing
from airflow_provider_kling.emulator.account import AccountHandlers
from airflow_provider_kling.emulator.clips import clip_spec, generation_seconds
from airflow_provider_kling.emulator.constants import API_PATHS, STATUS_STYLES, VIDEO_PREFIX, log
from airflow_provider_kling.emulator.media import video_data_async
from airflow_provider_kling.emulator.state import (
    ERROR_2026_MARKER,
    ERROR_MARKER,
    SECONDS_MARKER,
    Generation,
    _marker_text,
)
from airflow_provider_kling.emulator.validation import validate_body

FACE_ERROR: dict[str, Any] = {
    "detail": [
        {"loc": ["body", "image_url"], "msg": "Could not detect face in the image", "type": "value_error"}
    ]
}
POLICY_ERROR_2026: dict[str, Any] = {
    "name": "ContentPolicyViolation",
    "message": "The prompt was rejected by the content policy",
}

TOKENS_PER_5S = 420_000
USD_PER_5S = 0.42
#: The flat 2026 figure before the price table (kling-video/v1/standard bills it still); kept for imports.
CREDITS_PER_5S_2026 = 840_000
CREDITS_PER_USD = 2_000_000
OPAQUE_ALPHABET = string.ascii_letters + string.digits


class ApiHandlers(AccountHandlers):
    """The handlers of the service's endpoints (both paths, both methods)."""

    def _usage(self, duration: int, usd: float) -> dict[str, Any]:
        """``meta.usage``: the table's bill (``usd``) in the 2026 style, else the seed-era figures."""
        if self.answer_style == "2026":
            credits = pricing.credits(usd)
            return {"credits_used": credits, "usd_spent": credits / CREDITS_PER_USD}
        tokens = TOKENS_PER_5S * duration // 5
        if self.usage_style == "credits":
            return {"credits_used": tokens, "usd_spent": round(USD_PER_5S * duration / 5, 2)}
        return {"tokens_used": tokens}

    def _new_id(self, model: str) -> str:
        if self._next_ids:
            return self._next_ids.pop(0)
        while True:
            if self.id_style == "short":
                gen_id = f"gen_{secrets.token_hex(4)}"
            elif self.id_style == "opaque":
                gen_id = "".join(secrets.choice(OPAQUE_ALPHABET) for _ in range(21))
            elif self.id_style == "numeric":
                gen_id = str(10**17 + secrets.randbelow(9 * 10**17))
            else:
                gen_id = f"{uuid.uuid4()}:{model}"
            if gen_id not in self._generations:
                return gen_id

    # ------------------------------------------------------------------ API handlers

    async def _handle_create(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        parsed = True
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            parsed = False
        rec, fault, early = await self._start_keyed(request, body, api=True)
        if early is not None:
            return early
        endpoint = API_PATHS[request.path]
        message = "Invalid JSON body" if not parsed else validate_body(body, endpoint)
        if message is not None:
            model = str(body.get("model") or "") if isinstance(body, dict) else ""
            with self._lock:
                self._log_submit(request, model, None)
            return await self._json(request, rec, 400, self._error_body(request, 400, message), fault)
        clip = clip_spec(body)
        # Billed on the clip's length: the seconds served are the seconds paid.
        usd = pricing.billed_usd(body["model"], {**body, "duration": clip.duration})
        with self._lock:
            refusal = self._refusal(request, usd)
            if refusal is not None:
                self._log_submit(request, body["model"], None)
        if refusal is not None:
            return await self._json(request, rec, 403, self._error_body(request, 403, refusal), fault)
        now = time.monotonic()
        prompt = _marker_text(body)
        duration = clip.duration
        seconds_marker = SECONDS_MARKER.search(prompt)
        if seconds_marker:
            seconds = float(seconds_marker.group(1))
        else:
            seconds = generation_seconds(body["model"], duration, self.generation_seconds)
        if ERROR_2026_MARKER in prompt:
            outcome = "error_2026"
        elif ERROR_MARKER in prompt:
            outcome = "error"
        else:
            outcome = "completed"
        with self._lock:
            gen = Generation(
                id=self._new_id(body["model"]),
                model=body["model"],
                prompt=prompt,
                created_at=now,
                outcome=outcome,
                duration=duration,
                video_token=secrets.token_urlsafe(16),
                video_bytes=self.video_bytes,
                queued_until=now + 0.1 * seconds,
                ready_at=now + seconds,
                body=body,
                endpoint=endpoint,
                cache_key=secrets.token_urlsafe(12),
                usd=usd,
                # The wall-clock moment of ``now`` (not of this line): finished_wall must not run
                # ahead of the clock, or a charge read right after completion would be missed.
                created_wall=time.time() - (time.monotonic() - now),
                client_request_id=rec.client_request_id,
                request_id=str(uuid.uuid4()),
                clip=clip,
            )
            self._generations[gen.id] = gen
            self._by_token[gen.video_token] = gen
            self._log_submit(request, gen.model, gen)
        # Submit answers the hold: the price, rolled back if the generation fails.
        self._trace(request, gen.id, usd)
        log.debug("Created generation %s on the %s endpoint (outcome %s)", gen.id, endpoint, outcome)
        payload = {
            self.id_key: gen.id,
            "status": STATUS_STYLES[self.status_style][0],
            "meta": {"usage": self._usage(duration, usd)},
        }
        return await self._json(request, rec, 201, payload, fault)

    async def _handle_poll(self, request: web.Request) -> web.StreamResponse:
        rec, fault, early = await self._start_keyed(request, None, api=True)
        if early is not None:
            return early
        gen_id = request.query.get("generation_id")
        if not gen_id:
            body = self._error_body(request, 400, "generation_id: Required")
            return await self._json(request, rec, 400, body, fault)
        with self._lock:
            gen = self._generations.get(gen_id)
            gen = dataclasses.replace(gen) if gen is not None else None
        if gen is None:
            body = self._error_body(request, 404, "Generation not found")
            return await self._json(request, rec, 404, body, fault)
        phase = gen.phase(time.monotonic())
        # A failed generation is billed nothing (its hold rolled back); a running one shows its hold.
        usd = 0.0 if phase == 2 and gen.outcome != "completed" else gen.usd
        self._trace(request, gen.id, usd)
        names = STATUS_STYLES[self.status_style]
        video: dict[str, Any] | list[dict[str, Any]] | None = None
        error: dict[str, Any] | None = None
        status = names[phase]
        if phase == 2 and gen.outcome != "completed":
            status = names[3]
            error = POLICY_ERROR_2026 if gen.outcome == "error_2026" else FACE_ERROR
        elif phase == 2:
            size = gen.video_bytes
            if size is None and self.answer_style != "2026":  # only the 2025 answer tells the size
                size = len(await video_data_async(gen.clip, self._sample))
            video = self._video(request, gen, size)
        payload = {
            "id": gen.id,
            "status": status,
            "video": video,
            "error": error,
            "meta": {"usage": self._usage(gen.duration, usd)},
        }
        return await self._json(request, rec, 200, payload, fault)

    def _video(
        self, request: web.Request, gen: Generation, file_size: int | None
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """The finished ``video`` field (``file_size`` in the 2025 style); a list for omni models."""
        url = f"{request.scheme}://{request.host}{VIDEO_PREFIX}/{gen.video_token}/output.mp4"
        video: dict[str, Any]
        if self.answer_style == "2026":
            ks_time = f"_{int(gen.created_at * 1000):x}"
            video = {"url": f"{url}?cacheKey={gen.cache_key}&ksTime={ks_time}"}
        else:
            video = {
                "url": url,
                "content_type": "video/mp4",
                "file_name": "output.mp4",
                "file_size": file_size,
                "duration": gen.duration,
            }
        canonical = catalog.MODEL_ALIASES.get(gen.model, gen.model)
        return [video] if "omni" in canonical else video
