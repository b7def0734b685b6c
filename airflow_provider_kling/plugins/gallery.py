"""The gallery's FastAPI app, mounted by the api-server under ``/kling`` (Airflow 3.1+ only).

Routes (relative to the mount):

* ``GET /``: the HTML page; query ``dag_id``, ``model``, ``run_id``, ``task_id``, ``page``,
  ``per_page``.
* ``GET /api/generations``: the same list as JSON.
* ``GET /video?dag_id=&run_id=&task_id=&map_index=[&row=]``: streams the video that this task
  instance reported in its XCom result (``video_path``), or, with ``row``, the video of that row of
  the batch results manifest its XCom summary points at; with HTTP Range support. Only such paths
  are ever opened: the request names a task instance (and a row key), never a file.
* ``GET /icon.svg``: the navigation icon.

Who may see what: the user comes from Airflow's own token (the UI's cookie or a Bearer header,
:func:`airflow.api_fastapi.core_api.security.get_user`); a generation is listed, and its video
streamed, only when the auth manager lets that user read the XComs of its DAG.

Generations are the ``return_value`` XComs shaped like a Kling result (a dict with
``generation_id``, ``status`` and ``model``), and the rows of the results manifests that batch
summaries point at (:mod:`airflow_provider_kling.plugins.batch_rows`), read through the
api-server's DB session, newest first. The newest :data:`SCAN_LIMIT` candidate results
(``[kling] gallery_scan_limit``) are scanned.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.configuration import conf
from airflow.models.xcom import XComModel
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from sqlalchemy import Text, cast, or_, select

from airflow_provider_kling.plugins import URL_PREFIX
from airflow_provider_kling.plugins.batch_rows import batch_row, batch_rows, batch_summary
from airflow_provider_kling.plugins.spend import spend_by_dag_and_day
from airflow_provider_kling.plugins.streaming import (
    HOW_TO_ENABLE,
    SAFE_HEADERS,
    LocalVideo,
    Roots,
    StreamRefused,
    configured_roots,
    may_stream,
    media_type,
    open_local,
    open_remote,
    range_too_long,
)

#: How many of the newest candidate XCom results one page request reads at most.
SCAN_LIMIT = conf.getint("kling", "gallery_scan_limit", fallback=2000)
DEFAULT_PER_PAGE = 12
MAX_PER_PAGE = 100
#: Bytes per read while streaming a video.
CHUNK = 256 * 1024
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#6b46c1" '
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><rect x="2" y="5" width="15" '
    'height="14" rx="2"/><path d="m17 10 5-3v10l-5-3z"/></svg>'
)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

router = APIRouter()


def create_app() -> FastAPI:
    """The gallery app (the plugin's ``fastapi_apps`` entry)."""
    app = FastAPI(title="Kling videos", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)

    @app.exception_handler(HTTPException)
    async def to_login(request: Request, exc: HTTPException) -> Response:
        # A browser that is not signed in goes to the auth manager's login page, then back here.
        if exc.status_code == status.HTTP_401_UNAUTHORIZED and request.url.path.rstrip("/").endswith(
            URL_PREFIX
        ):
            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app


# ----------------------------------------------------------------------------------------- access


def _team_names(dag_ids: set[str], session: Any) -> dict[str, str | None]:
    from airflow.models.dag import DagModel

    mapping = getattr(DagModel, "get_dag_id_to_team_name_mapping", None)
    if mapping is None or not dag_ids:  # Airflow before multi-team
        return {}
    return dict(mapping(list(dag_ids), session=session))


def readable_dag_ids(user: Any, dag_ids: set[str], session: Any) -> set[str]:
    """The DAGs among ``dag_ids`` whose XComs (Kling results) the auth manager lets ``user`` read.

    :param user: the signed-in user.
    :param dag_ids: the DAGs to check.
    :param session: the api-server's DB session.
    """
    manager = get_auth_manager()
    teams = _team_names(dag_ids, session)
    allowed = set()
    for dag_id in dag_ids:
        try:
            details = DagDetails(id=dag_id, team_name=teams.get(dag_id))
        except TypeError:  # DagDetails without team_name (Airflow 3.1)
            details = DagDetails(id=dag_id)
        if manager.is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.XCOM, details=details, user=user
        ):
            allowed.add(dag_id)
    return allowed


# ----------------------------------------------------------------------------------------- reading


def _mentions_kling() -> Any:
    """A cheap prefilter on ``return_value`` XComs, checked in Python: a generation id or a batch's prefix."""
    text = cast(XComModel.value, Text)
    return (XComModel.key == "return_value") & or_(text.like("%generation_id%"), text.like("%output_prefix%"))


def _candidates() -> Any:
    """``return_value`` XComs that may be a Kling result or a batch summary."""
    return select(XComModel).where(_mentions_kling())


def _value(row: Any) -> Any:
    try:
        return XComModel.deserialize_value(row)
    except Exception:
        return None


def kling_result(row: Any) -> dict[str, Any] | None:
    """The row's value when it is a Kling task's result (a dict with generation_id, status, model)."""
    value = _value(row)
    if isinstance(value, dict) and {"generation_id", "status", "model"} <= value.keys():
        return value
    return None


def generations(
    session: Any,
    user: Any,
    *,
    dag_id: str | None = None,
    model: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    roots: Roots | None = None,
) -> tuple[list[dict[str, Any]], list[str], list[str], bool]:
    """The generations ``user`` may see, newest first, with the DAGs and models to filter on.

    A batch summary stands for the rows of its results manifest (read only under ``roots``).

    :param session: the api-server's DB session.
    :param user: the signed-in user.
    :param dag_id: only this DAG.
    :param model: only this model.
    :param run_id: only this DAG run.
    :param task_id: only this task.
    :param roots: where batch results may be read from (none: batch rows are not listed).
    :return: (items, readable DAG ids having results, models seen, whether the scan limit was hit).
    """
    from sqlalchemy import distinct

    dag_ids = set(session.scalars(select(distinct(XComModel.dag_id)).where(_mentions_kling())))
    readable = readable_dag_ids(user, dag_ids, session)
    wanted = readable & {dag_id} if dag_id else readable
    if not wanted:
        return [], sorted(readable), [], False
    stmt = _candidates().where(XComModel.dag_id.in_(wanted))
    if run_id:
        stmt = stmt.where(XComModel.run_id == run_id)
    if task_id:
        stmt = stmt.where(XComModel.task_id == task_id)
    rows = list(
        session.scalars(
            stmt.order_by(
                XComModel.timestamp.desc(),
                XComModel.dag_id,
                XComModel.run_id,
                XComModel.task_id,
                XComModel.map_index,
            ).limit(SCAN_LIMIT)
        )
    )
    items = []
    models = set()
    for row in rows:
        value = _value(row)
        if isinstance(value, dict) and {"generation_id", "status", "model"} <= value.keys():
            results = [value]
        elif (summary := batch_summary(value)) is not None and roots is not None:
            results = batch_rows(summary, row.dag_id, roots, SCAN_LIMIT)
        else:
            continue
        for result in results:
            if result.get("model"):
                models.add(str(result["model"]))
            if model and result.get("model") != model:
                continue
            items.append({"row": row, "result": result})
    return items, sorted(readable), sorted(models), len(rows) >= SCAN_LIMIT


def _cost(usage: Any) -> str:
    from airflow_provider_kling.utils.results import describe_usage

    return describe_usage(usage) if isinstance(usage, dict) else "no usage reported"


def _duration(value: Any) -> str:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return "?"
    return f"{seconds:g} s"


def _web_link(value: Any) -> str | None:
    """``value`` when it is an absolute http(s) URL (a link the page may show), else None."""
    if not isinstance(value, str):
        return None
    parts = urlsplit(value.strip())
    return value.strip() if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def describe(entry: dict[str, Any], prefix: str, ui_base: str, roots: Roots | None = None) -> dict[str, Any]:
    """One card's data (also the JSON API's item).

    :param entry: ``{"row": XComModel, "result": dict}`` from :func:`generations`.
    :param prefix: the gallery app's path (for the video URL).
    :param ui_base: the Airflow UI's base path (for links to the run and the task).
    :param roots: where videos may be streamed from (none: nothing is streamed).
    """
    row, result = entry["row"], entry["result"]
    ti: dict[str, Any] = {
        "dag_id": row.dag_id,
        "run_id": row.run_id,
        "task_id": row.task_id,
        "map_index": row.map_index,
    }
    key = result.get("batch_key")
    where = {**ti, "row": key} if key else ti
    run_link = f"{ui_base}/dags/{quote(row.dag_id, safe='')}/runs/{quote(row.run_id, safe='')}"
    task_link = f"{run_link}/tasks/{quote(row.task_id, safe='')}"
    if row.map_index >= 0:
        task_link += f"/mapped/{row.map_index}"
    streamable = roots is not None and roots.enabled and may_stream(result.get("video_path"), roots)
    return {
        **ti,
        "timestamp": row.timestamp.isoformat(timespec="seconds") if row.timestamp else None,
        "generation_id": result.get("generation_id"),
        "status": result.get("status"),
        "raw_status": result.get("raw_status"),
        "model": result.get("model"),
        "prompt": result.get("prompt"),
        "duration": result.get("duration"),
        "duration_text": _duration(result.get("duration")),
        "usage": result.get("usage") or {},
        "cost": _cost(result.get("usage") or {}),
        "has_video": streamable,
        "downloaded": bool(result.get("video_path")),
        "video_src": f"{prefix}/video?{urlencode(where)}" if streamable else None,
        "batch_key": key,
        "error": result.get("error"),
        "video_url": None if streamable else _web_link(result.get("video_url")),
        "run_link": run_link,
        "task_link": task_link,
    }


def _paths(request: Request) -> tuple[str, str]:
    """(this app's path, the Airflow UI's base path), from where the api-server mounted the app."""
    prefix = str(request.scope.get("root_path") or "").rstrip("/")
    ui_base = prefix[: -len(URL_PREFIX)] if prefix.endswith(URL_PREFIX) else ""
    return prefix, ui_base


Page = Annotated[int, Query(ge=1)]
PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE)]


@dataclass
class Filters:
    """The query parameters the page and the list API share (an empty value is no filter)."""

    dag_id: str | None
    model: str | None
    run_id: str | None
    task_id: str | None
    page: int
    per_page: int

    def asked(self) -> dict[str, str]:
        """The filters given, by name."""
        named = (
            ("dag_id", self.dag_id),
            ("model", self.model),
            ("run_id", self.run_id),
            ("task_id", self.task_id),
        )
        return {name: value for name, value in named if value}


def query_filters(
    dag_id: str | None = None,
    model: str | None = None,
    run_id: str | None = None,
    task_id: str | None = None,
    page: Page = 1,
    per_page: PerPage = DEFAULT_PER_PAGE,
) -> Filters:
    """The filters from the query string (a function, so FastAPI reads its annotations in this module)."""
    return Filters(dag_id, model, run_id, task_id, page, per_page)


FiltersDep = Annotated[Filters, Depends(query_filters)]


def _listing(request: Request, session: Any, user: Any, filters: Filters) -> dict[str, Any]:
    asked = filters.asked()
    dag_id, model, run_id, task_id = (asked.get(k) for k in ("dag_id", "model", "run_id", "task_id"))
    page, per_page = filters.page, filters.per_page
    roots = configured_roots()
    items, dag_ids, models, limited = generations(
        session, user, dag_id=dag_id, model=model, run_id=run_id, task_id=task_id, roots=roots
    )
    prefix, ui_base = _paths(request)
    pages = max(1, -(-len(items) // per_page))
    page = min(page, pages)
    shown = [describe(e, prefix, ui_base, roots) for e in items[(page - 1) * per_page : page * per_page]]
    return {
        "items": shown,
        "spend": spend_by_dag_and_day(items),
        "total": len(items),
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "dag_ids": dag_ids,
        "models": models,
        "scan_limited": limited,
        "streaming": roots.enabled,
        "how_to_enable": HOW_TO_ENABLE,
        "prefix": prefix,
    }


def page_security_headers(nonce: str) -> dict[str, str]:
    """The page's own CSP: its styles, one script carrying ``nonce``, videos from this origin only.

    :param nonce: the nonce of the page's one script.
    """
    policy = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; "
        "style-src 'unsafe-inline'; "
        "img-src 'self'; media-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
    )
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff"}


@router.get("/", response_class=HTMLResponse)
def page(request: Request, user: GetUserDep, session: SessionDep, filters: FiltersDep) -> HTMLResponse:
    """The gallery page."""
    from airflow_provider_kling.plugins.page import render

    data = _listing(request, session, user, filters)
    asked = filters.asked()

    def page_query(number: int) -> str:
        return urlencode({**asked, "page": number, "per_page": filters.per_page})

    without_run = urlencode({k: v for k, v in asked.items() if k not in ("run_id", "task_id")})
    nonce = secrets.token_urlsafe(16)
    html = render(
        **data,
        nonce=nonce,
        dag_id=filters.dag_id or "",
        model=filters.model or "",
        run_id=filters.run_id or "",
        task_id=filters.task_id or "",
        page_query=page_query,
        without_run=without_run,
        scan_limit=SCAN_LIMIT,
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store", **page_security_headers(nonce)})


@router.get("/api/generations")
def api_generations(
    request: Request, user: GetUserDep, session: SessionDep, filters: FiltersDep
) -> dict[str, Any]:
    """The gallery's list as JSON: ``items`` (one per generation), ``total``, ``page``, ``pages``, filters."""
    data = _listing(request, session, user, filters)
    data.pop("prefix")
    return data


@router.get("/icon.svg")
def icon() -> Response:
    """The navigation icon."""
    return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


# ----------------------------------------------------------------------------------------- streaming


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte offsets asked by a single-range ``Range`` header; None for the whole file.

    :param header: the request's Range header.
    :param size: the file's size.
    :raises HTTPException: 416 when the range cannot be satisfied.
    """
    if not header:
        return None
    if range_too_long(header):  # int() of thousands of digits raises (a 500): no file is that large
        raise HTTPException(416, headers={"Content-Range": f"bytes */{size}"})
    match = _RANGE.match(header.strip())
    if not match:  # several ranges or another unit: the whole file (a server may ignore Range)
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # the last N bytes
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise HTTPException(416, headers={"Content-Range": f"bytes */{size}"})
    return start, end


def _read(path: Any, start: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(start)
        left = length
        while left > 0:
            chunk = handle.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk


class _HeldFileResponse(FileResponse):
    """A FileResponse of a descriptor opened and checked before: closed once sent, even on a disconnect."""

    def __init__(self, video: LocalVideo, **kwargs: Any) -> None:
        super().__init__(video.served_path, stat_result=video.stat_result, **kwargs)
        self.video = video

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.video.close()


@router.get("/video")
def video(
    request: Request,
    user: GetUserDep,
    session: SessionDep,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int = -1,
    row: str | None = None,
) -> Response:
    """Stream the video a Kling task instance reported, when it lies under a configured root.

    The XCom's ``video_path`` (or, with ``row``, that batch row's) only selects among files the
    deployment allowed (:mod:`airflow_provider_kling.plugins.streaming`); Range requests are answered.
    """
    if dag_id not in readable_dag_ids(user, {dag_id}, session):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "You may not read this DAG's results")
    roots = configured_roots()
    if not roots.enabled:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Video streaming is off: {HOW_TO_ENABLE}")
    xcom = session.scalar(
        _candidates().where(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run_id,
            XComModel.task_id == task_id,
            XComModel.map_index == map_index,
        )
    )
    # A batch row's video must also carry a sidecar naming the batch's DAG (another DAG's file is not).
    batch_dag = None
    if row is None:
        result = kling_result(xcom) if xcom is not None else None
    else:
        summary = batch_summary(_value(xcom)) if xcom is not None else None
        result = batch_row(summary, dag_id, roots, row) if summary is not None else None
        batch_dag = dag_id
    if not result or not isinstance(result.get("video_path"), str) or not result["video_path"]:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No downloaded Kling video for this task instance")
    video_path, generation_id = result["video_path"], str(result["generation_id"])
    range_header = request.headers.get("range")
    try:
        if not may_stream(video_path, roots):
            raise StreamRefused("the video is outside the configured gallery roots")
        if "://" not in video_path or video_path.startswith("file://"):
            local = open_local(video_path, generation_id, roots, batch_dag)
            if range_too_long(range_header):
                size = local.stat_result.st_size
                local.close()
                raise HTTPException(416, headers={"Content-Range": f"bytes */{size}"})
            return _HeldFileResponse(local, media_type=media_type(str(local.path)), headers={**SAFE_HEADERS})
        path, size = open_remote(video_path, generation_id, roots, batch_dag)
    except StreamRefused as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"This video is not streamed: {exc}") from None
    if range_too_long(range_header):
        raise HTTPException(416, headers={"Content-Range": f"bytes */{size}"})
    headers = {"Accept-Ranges": "bytes", **SAFE_HEADERS}
    kind = media_type(video_path)
    asked = byte_range(range_header, size)
    if asked is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(_read(path, 0, size), media_type=kind, headers=headers)
    start, end = asked
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    return StreamingResponse(
        _read(path, start, end - start + 1),
        status_code=status.HTTP_206_PARTIAL_CONTENT,
        media_type=kind,
        headers=headers,
    )
