"""The ``kling`` connection form before Airflow 3.2: the provider info's ``conn-fields`` as WTForms fields.

Airflow 3.2+ builds the form from the provider info's ``conn-fields`` and never asks the hook. Airflow
2.11 to 3.1 ask :meth:`KlingHook.get_connection_form_widgets`, take text, password, integer and boolean
fields only, and store each value under its plain name in the connection's extra. Numbers are text
fields here (an integer field refuses cents and stores an empty field as null) and ``prices`` is its
JSON text: the hook reads numbers, their text and JSON text alike. WTForms and Flask-AppBuilder are
imported only when the form is asked for: workers and the triggerer never need them.
"""

from __future__ import annotations

from typing import Any


def connection_form_widgets() -> dict[str, Any]:
    """The ``conn-fields`` of the ``kling`` connection type as unbound WTForms fields, by extra name."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, StringField
    from wtforms.validators import Optional

    from airflow_provider_kling import get_provider_info

    (conn_type,) = get_provider_info()["connection-types"]
    widgets: dict[str, Any] = {}
    for name, spec in conn_type["conn-fields"].items():
        types = spec["schema"]["type"]
        label = lazy_gettext(spec["label"])
        if "boolean" in types:
            widgets[name] = BooleanField(label, description=spec["description"], default=False)
        else:
            widgets[name] = StringField(
                label, widget=BS3TextFieldWidget(), description=spec["description"], validators=[Optional()]
            )
    return widgets


__all__ = ["connection_form_widgets"]
