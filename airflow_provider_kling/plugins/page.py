# ruff: noqa: E501  (the template's lines are HTML)
"""The gallery page's HTML (a Jinja2 template, autoescaped), kept in Python so every build ships it."""

from __future__ import annotations

from functools import cache
from typing import Any

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kling videos</title>
<style>
  :root { color-scheme: light dark; --fg: #1a202c; --muted: #5a6577; --bg: #fff; --card: #f7f7fb;
          --line: #dfe3ea; --accent: #6b46c1; }
  @media (prefers-color-scheme: dark) {
    :root { --fg: #e6e8ee; --muted: #a0a8b8; --bg: #141821; --card: #1d2330; --line: #2e3646; --accent: #b794f4; }
  }
  body { margin: 0; padding: 16px 20px; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .sub { color: var(--muted); margin: 0 0 14px; }
  form.filters { display: flex; gap: 12px; align-items: end; flex-wrap: wrap; margin-bottom: 16px; }
  form.filters label { display: flex; flex-direction: column; gap: 2px; font-size: 12px; color: var(--muted); }
  select, button { font: inherit; padding: 4px 8px; border: 1px solid var(--line); border-radius: 6px;
                   background: var(--bg); color: var(--fg); }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 16px; }
  .card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow: hidden;
          display: flex; flex-direction: column; }
  .card video, .card .novideo { width: 100%; aspect-ratio: 16 / 9; background: #000; display: block; }
  .card .novideo { display: flex; align-items: center; justify-content: center; color: #ccc; }
  .meta { padding: 10px 12px 12px; display: flex; flex-direction: column; gap: 6px; }
  .prompt { font-size: 15px; font-weight: 600; }
  .facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; font-size: 13px; }
  .facts dt { color: var(--muted); }
  .facts dd { margin: 0; overflow-wrap: anywhere; }
  .status { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 12px; background: var(--line); }
  .status.completed { background: #c6f6d5; color: #22543d; }
  .status.failed { background: #fed7d7; color: #742a2a; }
  a { color: var(--accent); }
  .pager { display: flex; gap: 14px; align-items: center; margin-top: 18px; }
  .notice { padding: 8px 12px; border: 1px solid var(--line); border-radius: 8px; color: var(--muted); }
  .spend table { border-collapse: collapse; margin: 8px 0 18px; }
  .spend td, .spend th { border-bottom: 1px solid var(--line); padding: 4px 12px; text-align: left; }
  .empty { padding: 40px; text-align: center; color: var(--muted); border: 1px dashed var(--line); border-radius: 10px; }
</style>
</head>
<body>
<h1>Kling videos</h1>
<p class="sub">The generations of the Kling tasks in this deployment, newest first
  ({{ total }} shown to you{% if scan_limited %}, from the {{ scan_limit }} most recent results{% endif %}).</p>
<form class="filters" method="get" action="{{ prefix }}/">
  <label>DAG
    <select name="dag_id">
      <option value="">All DAGs</option>
      {% for d in dag_ids %}<option value="{{ d }}"{% if d == dag_id %} selected{% endif %}>{{ d }}</option>{% endfor %}
    </select>
  </label>
  <label>Model
    <select name="model">
      <option value="">All models</option>
      {% for m in models %}<option value="{{ m }}"{% if m == model %} selected{% endif %}>{{ m }}</option>{% endfor %}
    </select>
  </label>
  {% if run_id %}<input type="hidden" name="run_id" value="{{ run_id }}">
  <span>run <code>{{ run_id }}</code> (<a href="{{ prefix }}/?{{ without_run }}">all runs</a>)</span>{% endif %}
  <input type="hidden" name="per_page" value="{{ per_page }}">
  <noscript><button type="submit">Filter</button></noscript>
</form>
<script nonce="{{ nonce }}">
  for (const select of document.querySelectorAll("form.filters select")) {
    select.addEventListener("change", () => select.form.submit());
  }
</script>
{% if not streaming %}<p class="notice" id="streaming-off">Videos are not streamed here: to play downloaded videos, {{ how_to_enable }}.</p>{% endif %}
{% if spend %}
<details class="spend" id="spend">
  <summary>Spend per DAG and day (USD the service billed)</summary>
  <table>
    <thead><tr><th>Day (UTC)</th><th>DAG</th><th>USD</th><th>Generations</th><th>Without a USD figure</th></tr></thead>
    <tbody>
    {% for s in spend %}<tr data-dag-id="{{ s.dag_id }}" data-day="{{ s.day }}"><td>{{ s.day }}</td><td>{{ s.dag_id }}</td><td>{{ "%.4f"|format(s.usd) }}</td><td>{{ s.generations }}</td><td>{{ s.unpriced }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
</details>
{% endif %}
{% if items %}
<div class="grid">
{% for it in items %}
  <article class="card" data-generation-id="{{ it.generation_id }}" data-dag-id="{{ it.dag_id }}"{% if it.batch_key %} data-batch-key="{{ it.batch_key }}"{% endif %}>
    {% if it.video_src %}
    <video controls muted playsinline preload="metadata" src="{{ it.video_src }}"></video>
    {% else %}
    <div class="novideo">{% if it.downloaded %}not streamed{% else %}not downloaded{% endif %}{% if it.video_url %}: <a href="{{ it.video_url }}" target="_blank" rel="noopener">signed URL</a>{% endif %}</div>
    {% endif %}
    <div class="meta">
      <div class="prompt">{{ it.prompt or "(no prompt)" }}</div>
      <dl class="facts">
        <dt>Model</dt><dd><code>{{ it.model or "?" }}</code></dd>
        <dt>Duration</dt><dd>{{ it.duration_text }}</dd>
        <dt>Status</dt><dd><span class="status {{ it.status }}">{{ it.status }}</span>{% if it.raw_status and it.raw_status != it.status %} ({{ it.raw_status }}){% endif %}</dd>
        <dt>Cost</dt><dd>{{ it.cost }}</dd>
        <dt>DAG run</dt><dd><a href="{{ it.run_link }}" target="_top">{{ it.dag_id }} / {{ it.run_id }}</a></dd>
        <dt>Task</dt><dd><a class="task-link" href="{{ it.task_link }}" target="_top">{{ it.task_id }}{% if it.map_index >= 0 %} [{{ it.map_index }}]{% endif %}</a></dd>
        <dt>Finished</dt><dd>{{ it.timestamp }}</dd>
        <dt>Generation</dt><dd><code>{{ it.generation_id }}</code></dd>
        {% if it.batch_key %}<dt>Batch row</dt><dd><code>{{ it.batch_key }}</code></dd>{% endif %}
        {% if it.error %}<dt>Error</dt><dd class="error">{{ it.error }}</dd>{% endif %}
      </dl>
    </div>
  </article>
{% endfor %}
</div>
<nav class="pager">
  {% if page > 1 %}<a rel="prev" href="{{ prefix }}/?{{ page_query(page - 1) }}">&larr; Newer</a>{% endif %}
  <span>Page {{ page }} of {{ pages }}</span>
  {% if page < pages %}<a rel="next" href="{{ prefix }}/?{{ page_query(page + 1) }}">Older &rarr;</a>{% endif %}
</nav>
{% else %}
<div class="empty">No Kling generations to show{% if dag_id or model or run_id %} for this filter{% endif %}.</div>
{% endif %}
</body>
</html>
"""


@cache
def _template() -> Any:
    from jinja2 import Environment

    return Environment(autoescape=True).from_string(TEMPLATE)


def render(**context: Any) -> str:
    """The gallery page.

    :param context: the template's variables (see :func:`airflow_provider_kling.plugins.gallery.page`).
    """
    return str(_template().render(**context))
