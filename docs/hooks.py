"""MkDocs hooks: the parts of the site generated from the code and the repository's own files.

Nothing below is copied into ``docs/``: each directive, an HTML comment alone on its line, is replaced
at build time, so the pages cannot drift from what they describe.

- ``<!-- kling:model-table -->``: the model catalog, ``catalog.model_table_markdown()``.
- ``<!-- kling:emulator-flags -->``: the emulator's command-line flags, from its argument parser.
- ``<!-- kling:emulator-faults -->``: the fault kinds, from ``FAULT_HELP``.
- ``<!-- kling:emulator-docstring -->``: the ``airflow_provider_kling.emulator`` module docstring.
- ``<!-- kling:include FILE [optional] -->``: a Markdown file of the repository (RELIABILITY.md, ...);
  with ``optional``, a missing file becomes a note instead of an error (CHANGELOG.md).
- ``<!-- kling:code FILE -->``: a source file of the repository as a code block.
- ``<!-- kling:examples -->``: every ``example_dags/*.py``, its docstring and its code.
- ``<!-- kling:version -->``: the provider's version (also inline, inside code blocks).

These functions import nothing from MkDocs, so ``tests/unit/test_docs.py`` runs them without the docs
extra installed. ``mkdocs.yml`` lists this file under ``hooks:`` and excludes it from the site.
"""

from __future__ import annotations

import argparse
import ast
import re
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_DIRECTIVE = re.compile(
    r"^[ \t]*<!--[ \t]*kling:(?P<name>[\w-]+)(?P<args>[^>]*?)[ \t]*-->[ \t]*$", re.MULTILINE
)
_VERSION = "<!-- kling:version -->"
# A Markdown link or image to a relative target (not http(s), mailto or a page anchor).
_RELATIVE_LINK = re.compile(
    r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>(?![a-z][a-z0-9+.-]*:|#)[^)\s]+)\)"
)
# Repository files that are pages of the site, by the name links use in the repository.
_PAGE_OF_FILE = {
    "README.md": "index.md",
    "RELIABILITY.md": "reliability.md",
    "PERFORMANCE.md": "performance.md",
    "CHANGELOG.md": "changelog.md",
}
# The files a page depends on, watched by `mkdocs serve` besides docs/.
WATCHED = ("RELIABILITY.md", "PERFORMANCE.md", "CHANGELOG.md", "airflow_provider_kling", "example_dags")


class DirectiveError(ValueError):
    """A directive that names nothing known, or a file that is not there."""


# --- the pieces -------------------------------------------------------------------------------------


def model_table() -> str:
    """The catalog's model table, with each operator's name linked to its page."""
    from airflow_provider_kling.catalog import model_table_markdown

    table = model_table_markdown()
    pages = {
        "KlingImageToVideoOperator": "operators/image-to-video.md",
        "KlingTextToVideoOperator": "operators/text-to-video.md",
        "KlingVideoOperator": "operators/video.md",
    }
    for name, page in pages.items():
        table = re.sub(rf"\b{name}\b", f"[{name}]({page})", table)
    return table


def _cell(text: str) -> str:
    """Text for a table cell: one line, pipes escaped, ``<uuid>`` kept as text rather than a tag."""
    text = " ".join(text.split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|")


def emulator_flags() -> str:
    """One table row per flag of ``python -m airflow_provider_kling.emulator``."""
    from airflow_provider_kling.emulator.__main__ import build_parser

    parser = build_parser()
    formatter = argparse.HelpFormatter(parser.prog)
    rows = ["| flag | default | choices | meaning |", "|---|---|---|---|"]
    for action in parser._actions:  # argparse keeps its actions here; there is no public accessor
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        text = formatter._expand_help(action) if action.help else ""
        # A default that the help already explains (or that comes from the environment) is not shown.
        default = "-" if "default" in text or action.default is None else f"`{action.default}`"
        choices = ", ".join(f"`{c}`" for c in action.choices) if action.choices else "-"
        rows.append(
            f"| `{', '.join(action.option_strings)}` | {default} | {choices} | {_cell(text) or '-'} |"
        )
    return "\n".join(rows) + "\n"


def emulator_faults() -> str:
    """The fault kinds and what each does, from the emulator's ``FAULT_HELP``."""
    from airflow_provider_kling.emulator.app import FAULT_HELP

    rows = ["| kind | what the emulator does |", "|---|---|"]
    rows += [f"| `{kind}` | {_cell(text)} |" for kind, text in sorted(FAULT_HELP.items())]
    return "\n".join(rows) + "\n"


def _guess_language(block: str) -> str:
    if re.search(r"^\s*(curl|export|python|airflow|make)\b", block, re.MULTILINE):
        return "bash"
    return "python"


def rst_to_markdown(text: str, heading_level: int = 3) -> str:
    """The reStructuredText the project's docstrings use, as Markdown.

    Only what those docstrings contain: ``literal``, a paragraph ending in ``::`` followed by an
    indented block (a code block), a title underlined with ``---`` or ``===`` and bullet lists.
    """
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if (
            line.strip()
            and re.fullmatch(r"\s*([-=~])\1{2,}\s*", nxt)
            and len(nxt.strip()) >= len(line.strip())
        ):
            out += ["#" * heading_level + " " + line.strip(), ""]
            i += 2
            continue
        if line.rstrip().endswith("::"):
            stripped = line.rstrip()[:-2].rstrip()
            if stripped:
                out.append(stripped + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            code = textwrap.dedent("\n".join(block)).strip("\n")
            out += ["", f"```{_guess_language(code)}", code, "```", ""]
            continue
        out.append(line)
        i += 1
    return "\n".join(out).strip() + "\n"


def emulator_docstring() -> str:
    """The emulator package's docstring (its reference: faults, markers, control API), as Markdown."""
    import airflow_provider_kling.emulator as emulator

    return rst_to_markdown(emulator.__doc__ or "")


def _rewrite_links(text: str) -> str:
    """Links between repository files, made links between pages (or plain text when no page exists)."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        path, _, _anchor = target.partition("#")
        page = _PAGE_OF_FILE.get(path.removeprefix("./"))
        if match["bang"] or page is None:
            return match["text"] if not match["bang"] else ""
        return f"[{match['text']}]({page})"

    return _RELATIVE_LINK.sub(replace, text)


def include(relative: str, optional: bool = False) -> str:
    """A Markdown file of the repository, its links made site links."""
    path = ROOT / relative
    if not path.is_file():
        if not optional:
            raise DirectiveError(f"kling:include: no file {relative} in the repository")
        title = Path(relative).stem.capitalize()
        note = f"The repository has no `{relative}` yet: this page shows it once it does."
        return f"# {title}\n\n!!! note\n    {note}\n"
    return _rewrite_links(path.read_text(encoding="utf-8"))


def code(relative: str) -> str:
    """A source file of the repository as a fenced code block titled with its path."""
    path = ROOT / relative
    if not path.is_file():
        raise DirectiveError(f"kling:code: no file {relative} in the repository")
    language = {".py": "python", ".sh": "bash", ".toml": "toml", ".yml": "yaml", ".yaml": "yaml"}
    fence = "````" if "```" in path.read_text(encoding="utf-8") else "```"
    body = path.read_text(encoding="utf-8").rstrip("\n")
    return f'{fence}{language.get(path.suffix, "text")} title="{relative}"\n{body}\n{fence}\n'


def examples() -> str:
    """Every example DAG: a section with its docstring and, folded, its code."""
    parts = []
    for path in sorted((ROOT / "example_dags").glob("example_*.py")):
        relative = path.relative_to(ROOT).as_posix()
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        summary, _, rest = doc.partition("\n")
        parts.append(f"## `{path.stem}`\n\n**{summary.strip()}**\n\n{rst_to_markdown(rest, heading_level=4)}")
        parts.append(f'??? example "{relative}"\n\n' + textwrap.indent(code(relative), "    ") + "\n")
    return "\n".join(parts)


def version() -> str:
    from airflow_provider_kling import __version__

    return __version__


# --- the directives ---------------------------------------------------------------------------------


def render_directive(name: str, args: list[str]) -> str:
    """The Markdown that replaces one directive."""
    if name == "model-table":
        return model_table()
    if name == "emulator-flags":
        return emulator_flags()
    if name == "emulator-faults":
        return emulator_faults()
    if name == "emulator-docstring":
        return emulator_docstring()
    if name == "examples":
        return examples()
    if name == "include" and args:
        return include(args[0], optional="optional" in args[1:])
    if name == "code" and args:
        return code(args[0])
    if name == "version":
        return version()
    raise DirectiveError(f"unknown directive kling:{name} {' '.join(args)}".strip())


def expand(markdown: str) -> str:
    """Replace every directive of a page's Markdown."""
    markdown = markdown.replace(_VERSION, version())
    return _DIRECTIVE.sub(lambda m: render_directive(m["name"], m["args"].split()).rstrip("\n"), markdown)


# Sphinx roles in docstrings (:class:`X`) have no meaning in Markdown: keep only the code.
_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|mod|exc|obj|const):(?=<code>)")


def strip_roles(html: str) -> str:
    return _ROLE.sub("", html)


# --- MkDocs events ------------------------------------------------------------------------------------


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    try:
        return expand(markdown)
    except DirectiveError as exc:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page.file.src_uri}: {exc}") from exc


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    return strip_roles(html)


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    for name in WATCHED:
        if (ROOT / name).exists():
            server.watch(str(ROOT / name))
    return server
