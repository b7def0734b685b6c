"""Putting an answer on the wire: recording it, the service's error body, Range, scripts and faults.

:class:`Responder` is what every handler answers through: :meth:`~Responder._pre_handle` records the
request and applies a script or a fault that replaces the answer; :meth:`~Responder._answer` sends a
body (honouring Range for downloads) and applies a fault that mangles it (gzip, truncation, a reset
mid-body, a dribble).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from airflow_provider_kling.emulator.constants import API_PATHS, log, valid_client_request_id
from airflow_provider_kling.emulator.faults import (
    _FAULT_MESSAGES,
    DEFAULT_HUGE_SIZE,
    DEFAULT_SLOW_DELAY,
    DRIBBLE_PIECE,
    PRE_FAULTS,
    FaultsMixin,
    _Fault,
    _Script,
)
from airflow_provider_kling.emulator.media import CHUNK, _Body, _parse_range
from airflow_provider_kling.emulator.state import RecordedRequest


def request_key(name: str, kind: type) -> Any:
    """A key of an aiohttp request's storage: a typed ``web.RequestKey`` where aiohttp has it (3.12+)."""
    factory = getattr(web, "RequestKey", None)
    return factory(name, kind) if factory is not None else name


#: Where a request's record is kept on the aiohttp request (the header hook reads it).
REC_KEY = request_key("kling_emulator.rec", RecordedRequest)


class Responder(FaultsMixin):
    """Recording and answering, shared by the API, download and control handlers."""

    def _record(
        self, request: web.Request, body: Any, fault: _Fault | None, auth_ok: bool | None
    ) -> RecordedRequest:
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            json=body,
            time=time.time(),
            fault=fault.kind if fault else None,
            auth_ok=auth_ok,
            client_port=_client_port(request),
            retry_after=fault.retry_after if fault else None,
            endpoint=API_PATHS.get(request.path),
            client_request_id=valid_client_request_id(request.headers.get("X-Client-Request-Id")),
        )
        request[REC_KEY] = rec
        with self._lock:
            self._requests.append(rec)
        if fault:
            log.debug("Applying fault %s to %s %s", fault.kind, request.method, request.path)
        return rec

    def _error(
        self,
        request: web.Request,
        rec: RecordedRequest,
        status: int,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        body = {
            "message": message,
            "path": request.path,
            "requestId": str(uuid.uuid4()),
            "statusCode": status,
            "timestamp": _now_iso(),
        }
        rec.status = status
        return web.json_response(body, status=status, headers=headers)

    async def _fault_response(
        self, request: web.Request, rec: RecordedRequest, fault: _Fault
    ) -> web.StreamResponse:
        """Answer with a fault that replaces the real answer."""
        if fault.kind == "reset":
            await _drop(request, rst=True)
            return web.Response()
        if fault.kind == "non_json":
            rec.status = 200
            return web.Response(status=200, text="<html>Bad gateway</html>", content_type="text/html")
        if fault.kind == "huge":
            return await self._huge_response(
                request, rec, DEFAULT_HUGE_SIZE if fault.size is None else fault.size
            )
        status = int(fault.kind)
        headers = {}
        ra = fault.retry_after
        if isinstance(ra, str):
            headers["Retry-After"] = ra
        elif ra is not None:
            headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        return self._error(request, rec, status, _FAULT_MESSAGES[status], headers)

    async def _huge_response(
        self, request: web.Request, rec: RecordedRequest, size: int
    ) -> web.StreamResponse:
        """A 200 JSON answer of ``size`` bytes (valid JSON when size allows), streamed in chunks."""
        head, tail = b'{"id": "huge", "status": "queued", "padding": "', b'"}'
        if size < len(head) + len(tail):
            head, tail = b"", b""
        resp = web.StreamResponse(status=200)
        resp.content_type = "application/json"
        resp.content_length = size
        await resp.prepare(request)
        rec.status = 200
        if request.method == "HEAD":
            return resp
        padding = b"a" * CHUNK
        with contextlib.suppress(ConnectionError):
            await resp.write(head)
            left = size - len(head) - len(tail)
            while left > 0:
                n = min(left, CHUNK)
                await resp.write(padding[:n])
                left -= n
            await resp.write(tail)
        return resp

    def _script_response(self, rec: RecordedRequest, scripted: _Script) -> web.Response:
        rec.status = scripted.status
        rec.scripted = True
        return web.Response(status=scripted.status, body=scripted.body, headers=scripted.headers)

    async def _answer(
        self,
        request: web.Request,
        rec: RecordedRequest,
        status: int,
        body: _Body,
        content_type: str,
        fault: _Fault | None,
        *,
        ranged: bool = False,
    ) -> web.StreamResponse:
        """Send ``body`` as the answer, honouring Range (downloads) and applying a pending fault."""
        if fault is not None and fault.kind in PRE_FAULTS:
            return await self._fault_response(request, rec, fault)
        kind = fault.kind if fault is not None else None
        start, stop = 0, body.size
        headers: dict[str, str] = {}
        if ranged:
            headers["Accept-Ranges"] = "bytes"
            rng = _parse_range(request.headers.get("Range"), body.size)
            if rng == "invalid":
                rec.status = 416
                return web.Response(status=416, headers={"Content-Range": f"bytes */{body.size}"})
            if isinstance(rng, tuple):
                start, stop = rng
                status = 206
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{body.size}"
        if kind == "gzip":
            if _accepts_gzip(request.headers.get("Accept-Encoding")):
                compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip container
                parts = [compressor.compress(chunk) for chunk in body.chunks(0, body.size)]
                parts.append(compressor.flush())
                headers.pop("Content-Range", None)
                headers["Content-Encoding"] = "gzip"
                rec.status = 200 if ranged else status
                return web.Response(
                    status=rec.status, body=b"".join(parts), content_type=content_type, headers=headers
                )
            kind = None
        if kind is None and body.data is not None and start == 0 and stop == body.size:
            rec.status = status
            return web.Response(status=status, body=body.data, content_type=content_type, headers=headers)

        length = stop - start
        announced = sent = length
        if kind == "wrong_length":
            announced = sent = length - min(1000, length // 2)
        elif kind in ("reset_mid", "truncated"):
            sent = length // 2
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_type = content_type
        resp.content_length = announced
        await resp.prepare(request)
        rec.status = status
        if request.method == "HEAD":
            return resp
        if kind == "dribble":
            await _dribble(resp, body.chunks(start, start + sent), sent, fault)
            return resp
        for chunk in body.chunks(start, start + sent):
            await resp.write(chunk)
        if kind in ("reset_mid", "truncated"):
            # reset_mid ends with a TCP RST, truncated with an orderly close: both short of Content-Length.
            await _drop(request, rst=kind == "reset_mid", flush=True)
        return resp

    async def _pre_handle(
        self, request: web.Request, body: Any, auth_ok: bool | None, api: bool
    ) -> tuple[RecordedRequest, _Fault | None, web.StreamResponse | None]:
        """Record the request and apply the script or fault parts that come before the real handling."""
        scripted = self._take_script(request.method, request.path, api)
        if scripted is not None:
            rec = self._record(request, body, None, auth_ok)
            return rec, None, self._script_response(rec, scripted)
        fault = self._take_fault(request.method, request.path, api)
        rec = self._record(request, body, fault, auth_ok)
        if fault is None:
            return rec, None, None
        if fault.kind == "slow":
            await asyncio.sleep(DEFAULT_SLOW_DELAY if fault.delay is None else fault.delay)
            return rec, None, None
        if fault.kind in PRE_FAULTS and not (fault.after_create and request.method == "POST"):
            return rec, None, await self._fault_response(request, rec, fault)
        return rec, fault, None

    def _error_body(self, request: web.Request, status: int, message: str) -> dict[str, Any]:
        return {
            "message": message,
            "path": request.path,
            "requestId": str(uuid.uuid4()),
            "statusCode": status,
            "timestamp": _now_iso(),
        }

    async def _json(
        self, request: web.Request, rec: RecordedRequest, status: int, payload: Any, fault: _Fault | None
    ) -> web.StreamResponse:
        data = json.dumps(payload).encode()
        return await self._answer(request, rec, status, _Body(data), "application/json", fault)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _accepts_gzip(header: str | None) -> bool:
    for part in (header or "").split(","):
        token, _, params = part.strip().partition(";")
        if token.strip().lower() in ("gzip", "*"):
            q = params.strip().replace(" ", "")
            return q not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _client_port(request: web.Request) -> int | None:
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return peer[1] if isinstance(peer, (tuple, list)) and len(peer) >= 2 else None


async def _dribble(
    resp: web.StreamResponse, chunks: Iterable[bytes], length: int, fault: _Fault | None
) -> None:
    """Write ``length`` bytes a few at a time, spread over the fault's delay."""
    total = DEFAULT_SLOW_DELAY if fault is None or fault.delay is None else fault.delay
    steps = max(1, round(total / 0.02))
    piece = max(DRIBBLE_PIECE, math.ceil(length / steps))
    pause = total / max(1, math.ceil(length / piece))
    with contextlib.suppress(ConnectionError):
        for chunk in chunks:
            for pos in range(0, len(chunk), piece):
                await resp.write(chunk[pos : pos + piece])
                await asyncio.sleep(pause)


async def _drop(request: web.Request, *, rst: bool, flush: bool = False) -> None:
    """Close the client connection without finishing the answer."""
    transport = request.transport
    if transport is None:
        return
    if flush:
        # Let the bytes already written reach the client before the connection goes away.
        deadline = time.monotonic() + 2.0
        while transport.get_write_buffer_size() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)
    if rst:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER with a zero timeout turns close() into a TCP reset.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
