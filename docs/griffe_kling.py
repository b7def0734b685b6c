"""A Griffe extension for the API pages: the types of parameters a signature does not show.

Two kinds of documented parameter are not in the documented signature, and Griffe cannot find their
type there:

- a field of a pydantic model (``Generation``, ``KlingTriggerEvent``): its ``__init__`` is generated;
- an argument an Airflow operator forwards through ``**kwargs`` to its base class (``parameters`` to
  ``KlingBaseVideoOperator``, ``poke_interval`` to Airflow's ``BaseSensorOperator``, which Griffe does
  not load: that one is read from the imported class).

For each such ``:param name:`` of a class docstring without a ``:type name:``, this extension adds
one (just before it) with the type from the class's annotated attribute or from the nearest base
``__init__`` that takes it, so the API pages show it. ``mkdocs.yml`` loads it (mkdocstrings
``extensions``); ``warn_unknown_params`` is off there because these parameters are documented on
purpose.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import griffe

_PARAM = re.compile(r"^:param (?P<name>\w+):", re.MULTILINE)


def _annotation(cls: Any, name: str) -> Any:
    member = cls.members.get(name)
    if member is not None and member.is_attribute and member.annotation is not None:
        return member.annotation
    try:
        classes = [cls, *cls.mro()]
    except Exception:  # a base Griffe cannot resolve: look no further than the class itself
        classes = [cls]
    for klass in classes:
        init = klass.members.get("__init__")
        try:
            parameter = init.parameters[name] if init is not None else None
        except (KeyError, Exception):
            parameter = None
        if parameter is not None and parameter.annotation is not None:
            return parameter.annotation
    return _runtime_annotation(cls, name)


def _runtime_annotation(cls: Any, name: str) -> str | None:
    """The annotation of ``name`` in the ``__init__`` of a base Griffe cannot see (Airflow's), at run time."""
    try:
        runtime = getattr(importlib.import_module(cls.module.path), cls.name)
    except Exception:
        return None
    for klass in inspect.getmro(runtime)[1:]:
        try:
            parameter = inspect.signature(klass.__init__).parameters.get(name)
        except (TypeError, ValueError):
            continue
        if parameter is not None and parameter.annotation is not inspect.Parameter.empty:
            annotation = parameter.annotation
            return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    return None


def _classes(obj: Any) -> Any:
    for member in obj.members.values():
        if member.is_alias:
            continue
        if member.is_class:
            yield member
            yield from _classes(member)
        elif member.is_module:
            yield from _classes(member)


class ForwardedParameterTypes(griffe.Extension):
    """Add ``:type name:`` for documented parameters the signature does not show."""

    def on_package(self, *, pkg: Any, **kwargs: Any) -> None:
        for cls in _classes(pkg):
            if cls.docstring is None:
                continue
            text = cls.docstring.value
            try:
                own = cls.parameters
            except Exception:
                own = None
            lines = text.splitlines()
            typed = False
            for index in range(len(lines) - 1, -1, -1):  # backwards: insertions keep earlier indexes
                match = _PARAM.match(lines[index])
                if match is None:
                    continue
                name = match["name"]
                if (own is not None and name in own) or re.search(rf"^:type {name}:", text, re.MULTILINE):
                    continue
                annotation = _annotation(cls, name)
                if annotation is not None:
                    # Before the :param line: the Sphinx parser reads a type only when it comes first.
                    lines.insert(index, f":type {name}: {annotation}")
                    typed = True
            if typed:
                cls.docstring.value = "\n".join(lines)
