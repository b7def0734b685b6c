"""The download side: finished videos, pattern blobs and a redirector (no auth on any of them).

``/_emulator/videos/TOKEN/output.mp4`` serves a finished generation's video, ``/_emulator/blob/N``
N pattern bytes (see :func:`~airflow_provider_kling.emulator.media.blob_bytes`) and
``/_emulator/redirect`` redirects anywhere; the first two honour Range and download faults.
"""

from __future__ import annotations

from aiohttp import web

from airflow_provider_kling.emulator.answers import Responder
from airflow_provider_kling.emulator.media import MAX_BLOB, _Body, video_data_async


class DownloadHandlers(Responder):
    """The handlers behind the video URLs the API hands out, and the download test helpers."""

    async def _handle_video(self, request: web.Request) -> web.StreamResponse:
        rec, fault, early = await self._pre_handle(request, None, None, api=False)
        if early is not None:
            return early
        with self._lock:
            gen = self._by_token.get(request.match_info["token"])
            size = gen.video_bytes if gen is not None else None
        if gen is None:
            return self._error(request, rec, 404, "Not found")
        if size is None:
            body = _Body(await video_data_async(gen.clip, self._sample))
        else:
            body = _Body(blob_size=size)
        return await self._answer(request, rec, 200, body, "video/mp4", fault, ranged=True)

    async def _handle_redirect(self, request: web.Request) -> web.StreamResponse:
        """``?to=URL[&hops=N][&status=30x]``: redirect to any URL (file://, ftp://, another redirect...).

        With ``hops`` > 1 it first redirects to itself N-1 times (a chain of N redirects; a large N
        stands for a loop).
        """
        rec, _fault, early = await self._pre_handle(request, None, None, api=False)
        if early is not None:
            return early
        target = request.query.get("to")
        if not target:
            return self._error(request, rec, 400, "to: Required")
        try:
            hops = int(request.query.get("hops", "1"))
            status = int(request.query.get("status", "302"))
        except ValueError:
            return self._error(request, rec, 400, "hops and status must be integers")
        if status not in (301, 302, 303, 307, 308) or hops < 1:
            return self._error(request, rec, 400, "status must be 301, 302, 303, 307 or 308; hops >= 1")
        if hops > 1:
            query = {"to": target, "hops": str(hops - 1), "status": str(status)}
            target = str(request.url.with_query(query))
        rec.status = status
        return web.Response(status=status, headers={"Location": target})

    async def _handle_blob(self, request: web.Request) -> web.StreamResponse:
        rec, fault, early = await self._pre_handle(request, None, None, api=False)
        if early is not None:
            return early
        try:
            nbytes = int(request.match_info["nbytes"])
        except ValueError:
            nbytes = -1
        if not 0 <= nbytes <= MAX_BLOB:
            return self._error(request, rec, 400, f"nbytes must be an integer between 0 and {MAX_BLOB}")
        body = _Body(blob_size=nbytes)
        return await self._answer(request, rec, 200, body, "application/octet-stream", fault, ranged=True)
