"""What a batch run needs from its task's rendered arguments (:class:`BatchSettings`), built by the
batch operator so this package never reads an operator's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BatchSettings:
    """What a batch run needs from its task's (rendered) arguments.

    :param manifest: the rows: a JSONL / CSV path or URL, an ObjectStoragePath, or a list of dicts.
    :param output_prefix: the folder (local or object storage) the videos and results go to.
    :param model: the model of rows that name none.
    :param parameters: fields shared by every row (a row's own fields win).
    :param key_field: the column holding the row key.
    :param check_capabilities: False to send models or fields the catalog does not know, unchecked.
    :param max_active: most generations in flight at once.
    :param timeout_seconds: how long the whole batch may take, in seconds.
    :param skip_existing: reuse videos already under the prefix from the same request.
    :param resend_unknown: send again, at the start of a try, rows whose POST may have created a
        generation whose id never came back.
    :param results_name: the results manifest's file name under ``output_prefix``.
    :param download_concurrency: videos downloaded at once.
    :param submit_concurrency: POSTs in flight at once while filling the window.
    :param presign_inputs: send private object storage images as presigned URLs when possible.
    :param presign_seconds: validity of presigned input URLs.
    :param max_usd: the most the whole batch may pay, in USD (what is in flight counts); None: no cap.
    """

    manifest: Any
    output_prefix: Any
    model: str
    parameters: dict[str, Any] | None
    key_field: str
    check_capabilities: bool
    max_active: int
    timeout_seconds: float
    skip_existing: bool
    resend_unknown: bool
    results_name: str
    download_concurrency: int
    submit_concurrency: int
    presign_inputs: bool
    presign_seconds: int
    max_usd: float | None = None
