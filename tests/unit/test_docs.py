"""The documentation site's generated parts (docs/hooks.py), without MkDocs installed.

`make docs` builds the whole site strictly; these checks run in `make test` too, so a change that
breaks a page (a file a page includes is gone, a result key the docs do not list) fails there first.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _load_hooks():
    spec = importlib.util.spec_from_file_location("kling_docs_hooks", DOCS / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hooks = _load_hooks()


def test_every_page_expands() -> None:
    pages = sorted(DOCS.rglob("*.md"))
    assert pages
    for page in pages:
        text = hooks.expand(page.read_text(encoding="utf-8"))
        assert "kling:" not in re.sub(r"`[^`]*`", "", text), f"{page}: a directive was left unexpanded"


def test_catalog_page_lists_every_model() -> None:
    from airflow_provider_kling.catalog import current_models

    table = hooks.expand((DOCS / "catalog.md").read_text(encoding="utf-8"))
    for model_id in current_models():
        assert f"`{model_id}`" in table
    assert "[KlingImageToVideoOperator](operators/image-to-video.md)" in table


def test_emulator_page_lists_every_flag_and_fault() -> None:
    from airflow_provider_kling.emulator.__main__ import build_parser
    from airflow_provider_kling.emulator.app import FAULT_HELP

    page = hooks.expand((DOCS / "emulator.md").read_text(encoding="utf-8"))
    for action in build_parser()._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                assert f"`{flag}`" in page
    for kind in FAULT_HELP:
        assert f"| `{kind}` |" in page
    assert "&lt;uuid&gt;" in page  # the help's <uuid>:<model> stays text, not an HTML tag
    assert "```bash\ncurl -s localhost:8642/_emulator/health" in page  # the docstring's :: blocks


def test_xcom_table_lists_every_result_key() -> None:
    from airflow_provider_kling.operators.kling import RESULT_KEYS

    page = (DOCS / "operators" / "index.md").read_text(encoding="utf-8")
    section = page.split("## The XCom dict", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)
    assert documented == list(RESULT_KEYS)


def test_include_rewrites_links_and_tolerates_an_optional_missing_file(tmp_path, monkeypatch) -> None:
    (tmp_path / "NOTES.md").write_text(
        "# Notes\n[perf](PERFORMANCE.md#latest) [code](tests/integration/test_faults.py) "
        "[web](https://x.org/a.md) "
        "[here](#notes) ![shot](test-artifacts/ui/a.png)\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(hooks, "ROOT", tmp_path)
    text = hooks.include("NOTES.md")
    assert "[perf](performance.md)" in text
    assert "[code]" not in text
    assert " code " in text
    assert "[web](https://x.org/a.md)" in text
    assert "[here](#notes)" in text
    assert "a.png" not in text
    assert "has no `CHANGELOG.md` yet" in hooks.include("CHANGELOG.md", optional=True)
    with pytest.raises(hooks.DirectiveError):
        hooks.include("CHANGELOG.md")
    with pytest.raises(hooks.DirectiveError):
        hooks.expand("<!-- kling:no-such-thing -->\n")


def test_rst_to_markdown() -> None:
    text = "Title\n-----\nRun it::\n\n    python -m x --port 1\n\nThen ``y``.\n"
    assert (
        hooks.rst_to_markdown(text)
        == "### Title\n\nRun it:\n\n```bash\npython -m x --port 1\n```\n\nThen ``y``.\n"
    )
