"""The human review example's body: user input (the prompt, the revised run) is shown as text.

The body is rendered by the review operator's own templating, then as Markdown with raw HTML allowed
(the most permissive renderer a reviewer's page could use): nothing typed into a prompt becomes
markup, a link or an HTML element.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from markdown_it import MarkdownIt

from tests.support.dags import load_dag_file

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = "**x** [link](javascript:alert(1)) <img src=x onerror=alert(1)>"


class Elements(HTMLParser):
    """The elements of an HTML fragment, with their attributes, and its text."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text += data


def rendered(markdown: str) -> Elements:
    return Elements(MarkdownIt("commonmark", {"html": True}).render(markdown))


@pytest.fixture(scope="module")
def review() -> Any:
    module = load_dag_file(ROOT / "example_dags" / "example_kling_review.py")
    if not hasattr(module, "dag"):
        pytest.skip("no human-in-the-loop operators on this Airflow")
    return module


@pytest.mark.parametrize(
    "value",
    [
        PAYLOAD,
        "# heading\n\n- item\n> quote\n---",
        "`code` ~~strike~~ _em_ &amp; | a | b | \\*",
        "https://example.org/x?a=1&b=<2>",
        "run_`id` ' \"",
    ],
)
def test_markdown_text_renders_as_the_text_typed(review: Any, value: str) -> None:
    out = rendered(review.markdown_text(value))
    assert [tag for tag, _ in out.elements] == ["p"]  # one paragraph of text, nothing else
    assert out.text.strip() == " ".join(value.split())


def test_markdown_text_of_none_is_empty(review: Any) -> None:
    assert review.markdown_text(None) == ""


def test_review_body_shows_an_injected_prompt_and_revised_run_as_text(review: Any) -> None:
    task = review.dag.get_task("review")
    video = {"prompt": PAYLOAD, "model": review.MODEL, "duration": 5.0, "usage": {"usd_spent": 0.25}}
    ti = SimpleNamespace(xcom_pull=lambda task_ids, key=None: video if task_ids == "generate" else None)
    context = {
        "ti": ti,
        "task_instance": ti,
        "dag": review.dag,
        "run_id": "manual__2026-01-01",
        "dag_run": SimpleNamespace(conf={"prompt": PAYLOAD, "revises": PAYLOAD}),
        "params": {"prompt": PAYLOAD, "revises": PAYLOAD},
    }
    task.render_template_fields(context, jinja_env=review.dag.get_template_env())
    out = rendered(task.body)

    tags = [tag for tag, _ in out.elements]
    assert "img" not in tags
    # The body's own markup only: its bold labels, the model's code span and the gallery link.
    assert tags.count("strong") == 6
    (link,) = [attrs for tag, attrs in out.elements if tag == "a"]
    assert "/kling/?dag_id=example_kling_review" in str(link["href"])
    assert not any("javascript" in str(value) for _, attrs in out.elements for value in attrs.values())
    # Both values are shown as typed.
    assert f"Prompt: {PAYLOAD}" in out.text
    assert f"Revision of run {PAYLOAD}." in out.text
