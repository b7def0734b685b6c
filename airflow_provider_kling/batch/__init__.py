"""Catalog-scale batches for :class:`~airflow_provider_kling.operators.batch.KlingBatchVideoOperator`.

Loaded only when a batch task runs (never at DAG parse). What lives here:

- :mod:`~airflow_provider_kling.batch.manifest`: reading a manifest (JSONL or CSV in object storage
  or a local file, or a list of dicts from XCom) and validating every row before anything is paid,
  as it streams (:func:`iter_manifest`; :func:`read_manifest` and
  :func:`validate_rows` for lists);
- :mod:`~airflow_provider_kling.batch.validation`: a catalog-scale manifest validated as it streams
  (:func:`validate_manifest`), and a manifest checked before and unchanged not checked again
  (:func:`unchanged_check`);
- :mod:`~airflow_provider_kling.batch.state`: the batch's durable state, one small record per row,
  in ``task_state_store`` (Airflow 3.3+) or in state objects under the output prefix (Airflow 2.11,
  or with no store) (:class:`BatchState`), each object replaced whole or not at all
  (:func:`write_atomic`); and the lease that keeps two runs from writing (and paying for) the same
  output prefix at once (:class:`BatchLease`);
- :mod:`~airflow_provider_kling.batch.settings`: the settings a run works from (:class:`BatchSettings`);
- :mod:`~airflow_provider_kling.batch.results`: the results-manifest rows, and the failed rows a
  failed batch's error names;
- :mod:`~airflow_provider_kling.batch.run`: one run of the batch loop in the worker: reconcile what
  the trigger reported, download finished videos (bounded concurrency), submit new rows up to
  ``max_active`` in flight, then defer again or write the results manifest (:class:`BatchRun`,
  configured by a :class:`BatchSettings`).

A row's record is written right after its paid POST answers, before anything else happens, so a
crash, a retry or a clear reconnects to the generation instead of paying again.

This package never imports the operators: the operator builds a :class:`BatchSettings` and drives a
:class:`BatchRun`. The names below are re-exported from where ``batch.py`` defined them.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED
from typing import TYPE_CHECKING

from airflow_provider_kling.batch.manifest import (
    KEY_RULE,
    STATS,
    Row,
    iter_manifest,
    open_path,
    read_manifest,
    validate_rows,
    validation_report,
)
from airflow_provider_kling.batch.run import BatchRun, Outcome
from airflow_provider_kling.batch.settings import BatchSettings
from airflow_provider_kling.batch.state import (
    COMPLETED,
    DONE,
    FAILED,
    FINAL,
    LEASE_GRACE,
    LEASE_NAME,
    REUSED,
    ROWS_PER_SHARD,
    SENDING,
    STATE_KEY,
    SUBMITTED,
    UNKNOWN,
    BatchLease,
    BatchState,
    KlingBatchStateError,
    write_atomic,
    write_jsonl,
)
from airflow_provider_kling.batch.validation import (
    ManifestCheck,
    ManifestInvalid,
    load_rows,
    unchanged_check,
    validate_manifest,
)

__all__ = [
    "COMPLETED",
    "DONE",
    "FAILED",
    "FINAL",
    "FIRST_COMPLETED",
    "KEY_RULE",
    "LEASE_GRACE",
    "LEASE_NAME",
    "REUSED",
    "ROWS_PER_SHARD",
    "SENDING",
    "STATE_KEY",
    "STATS",
    "SUBMITTED",
    "TYPE_CHECKING",
    "UNKNOWN",
    "BatchLease",
    "BatchRun",
    "BatchSettings",
    "BatchState",
    "KlingBatchStateError",
    "ManifestCheck",
    "ManifestInvalid",
    "Outcome",
    "Row",
    "iter_manifest",
    "load_rows",
    "open_path",
    "read_manifest",
    "unchanged_check",
    "validate_manifest",
    "validate_rows",
    "validation_report",
    "write_atomic",
    "write_jsonl",
]
