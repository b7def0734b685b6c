"""The names users, example DAGs, benchmarks, docs and stored Airflow rows rely on, and the house rules.

The public names of every module, as they stood before the provider was split into rooms of one job
each: each must stay importable from where it was (a re-export is enough). Class paths stored in
the metadata database (triggers, extra links), the ``task_state_store`` keys and the connection type
must not change at all. No import cycle anywhere in the package.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_provider_kling"

#: module -> the public names it defined before the restructuring.
PUBLIC_NAMES: dict[str, list[str]] = {
    "airflow_provider_kling": ["get_provider_info"],
    "airflow_provider_kling.batch": [
        "BatchLease",
        "BatchRun",
        "BatchState",
        "COMPLETED",
        "DONE",
        "FAILED",
        "FINAL",
        "FIRST_COMPLETED",
        "KEY_RULE",
        "KlingBatchStateError",
        "LEASE_GRACE",
        "LEASE_NAME",
        "Outcome",
        "REUSED",
        "ROWS_PER_SHARD",
        "Row",
        "SENDING",
        "STATE_KEY",
        "SUBMITTED",
        "TYPE_CHECKING",
        "UNKNOWN",
        "open_path",
        "read_manifest",
        "validate_rows",
        "validation_report",
        "write_atomic",
        "write_jsonl",
    ],
    "airflow_provider_kling.catalog": [
        "ALIASES",
        "ASPECT_RATIOS",
        "CAMERA_AXES",
        "CAMERA_TYPES",
        "COMMON_OPTIONAL",
        "DEFAULT_ENDPOINT",
        "EFFECT_SCENES",
        "ENDPOINT_PATHS",
        "FIELDS",
        "KINDS",
        "MASK_SEED_NAME",
        "MB",
        "MODELS",
        "MODEL_ALIASES",
        "ONE_IMAGE_EFFECTS",
        "TWO_IMAGE_EFFECTS",
        "current_models",
        "field_spec",
        "model_entry",
        "model_fields",
        "model_table_markdown",
    ],
    "airflow_provider_kling.emulator": [
        "ANSWER_STYLES",
        "API_PATH",
        "API_PATHS",
        "FAULT_HELP",
        "FAULT_KINDS",
        "KNOWN_MODELS",
        "UNIFIED_PATH",
    ],
    "airflow_provider_kling.emulator.app": [
        "ANSWER_STYLES",
        "API_PATH",
        "API_PATHS",
        "BLOB_PREFIX",
        "BODY_FAULTS",
        "CHUNK",
        "CONTROL_PREFIX",
        "CREDITS_PER_5S_2026",
        "CREDITS_PER_USD",
        "DEFAULT_HUGE_SIZE",
        "DEFAULT_SLOW_DELAY",
        "DRIBBLE_PIECE",
        "DURATIONS",
        "ERROR_2026_MARKER",
        "ERROR_MARKER",
        "FACE_ERROR",
        "FAULT_HELP",
        "FAULT_KINDS",
        "Generation",
        "ID_KEYS",
        "ID_STYLES",
        "KNOWN_MODELS",
        "KlingEmulator",
        "LISTEN_BACKLOG",
        "MAX_BLOB",
        "MAX_REQUEST_BYTES",
        "OPAQUE_ALPHABET",
        "POLICY_ERROR_2026",
        "PRE_FAULTS",
        "REDIRECT_PATH",
        "RecordedRequest",
        "SAMPLE_CHUNK",
        "SAMPLE_PATH",
        "SECONDS_MARKER",
        "STATUS_STYLES",
        "TOKENS_PER_5S",
        "UNIFIED_PATH",
        "USAGE_STYLES",
        "USD_PER_5S",
        "VIDEO_PREFIX",
        "blob_bytes",
        "validate_body",
    ],
    "airflow_provider_kling.exceptions": [
        "KlingAPIError",
        "KlingAuthError",
        "KlingBadRequestError",
        "KlingConfigError",
        "KlingConnectionError",
        "KlingDeadlineExceeded",
        "KlingDownloadError",
        "KlingError",
        "KlingForbiddenError",
        "KlingGenerationFailed",
        "KlingGenerationTimeout",
        "KlingNotFoundError",
        "KlingRateLimitError",
        "KlingResponseTooLarge",
        "KlingServerError",
        "KlingTLSError",
        "KlingUnusableIdError",
        "KlingValidationError",
        "redact_urls",
    ],
    "airflow_provider_kling.hooks.kling": [
        "ALLOW_LOOPBACK_DOWNLOADS",
        "DEFAULT_BASE_URL",
        "DEFAULT_ENDPOINT",
        "DOWNLOAD_TIMEOUT",
        "ENDPOINT_PATHS",
        "GENERATION_PATH",
        "KlingHook",
        "MAX_ID_LENGTH",
        "MAX_RESPONSE_BYTES",
        "MAX_RETRY_AFTER",
        "TYPE_CHECKING",
        "check_api",
        "check_download_url",
        "check_generation_id",
        "check_poll_settings",
        "endpoint_choice",
        "endpoint_from_connection",
        "post_may_have_created",
        "raise_for_terminal",
        "resolve_destination",
        "safe_file_name",
    ],
    "airflow_provider_kling.lineage": [
        "KlingGenerationRunFacet",
        "MEDIA_FIELDS",
        "dataset",
        "media_locations",
        "operator_lineage",
    ],
    "airflow_provider_kling.links.kling": ["KlingVideoLink", "TYPE_CHECKING", "VIDEO_URL_XCOM_KEY"],
    "airflow_provider_kling.metrics": [
        "CREDITS",
        "FINISHED",
        "OTHER_MODEL",
        "REUSED",
        "SECONDS",
        "SUBMITTED",
        "credits",
        "finished",
        "incr",
        "model_tag",
        "timing",
    ],
    "airflow_provider_kling.models": [
        "AdvancedCameraControl",
        "CameraConfig",
        "CameraControl",
        "Generation",
        "GenerationStatus",
        "KlingRequest",
        "PRESIGN_SCHEMES",
        "PRESIGN_SECONDS",
        "STORAGE_SCHEMES",
        "TrajectoryPoint",
        "build_request",
        "check_http_url",
        "error_message",
        "image_mime",
        "is_file_reference",
        "presign_image",
        "read_image_file",
        "resolve_file_inputs",
        "usable_video_url",
    ],
    "airflow_provider_kling.operators.kling": [
        "CREDITS_PER_USD",
        "DEFAULT_MODEL",
        "DEFAULT_TEXT_MODEL",
        "GENERATION_ID_STATE_KEY",
        "GENERATION_ID_XCOM_KEY",
        "KlingBaseVideoOperator",
        "KlingBatchVideoOperator",
        "KlingImageToVideoOperator",
        "KlingTextToVideoOperator",
        "KlingVideoOperator",
        "RESULT_KEYS",
        "RESUME_XCOM_KEY",
        "TYPE_CHECKING",
        "VIDEO_URL_XCOM_KEY",
        "annotate_outlets",
        "describe_usage",
        "download",
        "fail_fast",
        "find_existing_video",
        "generation_from_event",
        "model_from_id",
        "result_dict",
        "sidecar_path",
        "sidecar_reusable",
        "stored_video_link",
        "timeout_seconds",
        "video_file_name",
    ],
    "airflow_provider_kling.plugins": [
        "KlingGalleryPlugin",
        "URL_PREFIX",
        "URL_ROUTE",
        "base_path",
        "supports_gallery",
    ],
    "airflow_provider_kling.plugins.gallery": [
        "CHUNK",
        "DEFAULT_PER_PAGE",
        "HOW_TO_ENABLE",
        "ICON",
        "MAX_PER_PAGE",
        "SAFE_HEADERS",
        "SCAN_LIMIT",
        "URL_PREFIX",
        "api_generations",
        "byte_range",
        "create_app",
        "describe",
        "generations",
        "icon",
        "kling_result",
        "page",
        "page_security_headers",
        "readable_dag_ids",
        "video",
    ],
    "airflow_provider_kling.plugins.page": ["TEMPLATE", "render"],
    "airflow_provider_kling.plugins.streaming": [
        "HOW_TO_ENABLE",
        "LocalVideo",
        "MAX_RANGE_DIGITS",
        "ROOTS_OPTION",
        "Roots",
        "SAFE_HEADERS",
        "StreamRefused",
        "VIDEO_TYPES",
        "configured_roots",
        "may_stream",
        "media_type",
        "open_local",
        "open_remote",
        "parse_roots",
        "range_too_long",
    ],
    "airflow_provider_kling.sensors.kling": [
        "DEFAULT_POKE_INTERVAL",
        "KlingGenerationSensor",
        "TYPE_CHECKING",
        "VIDEO_URL_XCOM_KEY",
    ],
    "airflow_provider_kling.triggers.kling": [
        "KlingBatchTrigger",
        "KlingGenerationTrigger",
        "KlingTriggerEvent",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_NAMES))
def test_every_earlier_public_name_still_imports(module: str) -> None:
    if module.startswith("airflow_provider_kling.plugins.") and not _gallery_supported():
        pytest.skip("the gallery app needs Airflow 3.1+")
    loaded = importlib.import_module(module)
    missing = [name for name in PUBLIC_NAMES[module] if not hasattr(loaded, name)]
    assert not missing, f"{module} lost {missing}"


def _gallery_supported() -> bool:
    from airflow_provider_kling.plugins import supports_gallery

    return supports_gallery()


def test_stored_class_paths_keys_and_connection_type_are_unchanged() -> None:
    from airflow_provider_kling import get_provider_info
    from airflow_provider_kling.batch import STATE_KEY
    from airflow_provider_kling.links.kling import KlingVideoLink
    from airflow_provider_kling.operators.kling import GENERATION_ID_STATE_KEY, RESUME_XCOM_KEY
    from airflow_provider_kling.triggers.kling import KlingGenerationTrigger

    trigger = KlingGenerationTrigger(generation_id="g", kling_conn_id="kling_default")
    assert trigger.serialize()[0] == "airflow_provider_kling.triggers.kling.KlingGenerationTrigger"
    link = f"{KlingVideoLink.__module__}.{KlingVideoLink.__qualname__}"
    assert link == "airflow_provider_kling.links.kling.KlingVideoLink"
    info = get_provider_info()
    assert link in info["extra-links"]
    assert [c["connection-type"] for c in info["connection-types"]] == ["kling"]
    assert info["connection-types"][0]["hook-class-name"] == "airflow_provider_kling.hooks.kling.KlingHook"
    assert (GENERATION_ID_STATE_KEY, RESUME_XCOM_KEY, STATE_KEY) == (
        "kling_generation_id",
        "kling_resume",
        "kling_batch",
    )


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports (at any depth of the file: lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("airflow_provider_kling")
        ):
            found.add(node.module)
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("airflow_provider_kling"))
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_between_modules() -> None:
    """Lazy imports included: a cycle hidden inside a function is still two rooms that need each other."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in _imports(path) if m in files and m != name} for name, path in files.items()}
    # A package's __init__ re-exporting its own modules is not a cycle of jobs.
    graph = {
        name: {m for m in deps if not (files[name].name == "__init__.py" and m.startswith(name + "."))}
        for name, deps in graph.items()
    }
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
