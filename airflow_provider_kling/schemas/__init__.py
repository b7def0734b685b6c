"""Request validation and results of the Kling video API.

- :mod:`~airflow_provider_kling.schemas.media`: one media input (data URIs, file and object inputs,
  presigning, input limits, the identity of a stored object);
- :mod:`~airflow_provider_kling.schemas.request`: field types, cross-field rules, ``request_model``,
  ``KlingRequest`` and ``build_request``;
- :mod:`~airflow_provider_kling.schemas.file_inputs`: a request's image slots and ``resolve_file_inputs``;
- :mod:`~airflow_provider_kling.schemas.generation`: statuses and ``Generation``.

``airflow_provider_kling.models`` re-exports every name these held when they were one module.
Nothing is imported here, so importing one of them does not load the others.
"""

from __future__ import annotations
