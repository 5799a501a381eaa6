"""Executed notebooks as HTML pages that need no network: math, plots and widgets included.

nbconvert's lab template loads MathJax, require.js and the widget manager from a CDN, so an
offline reader sees raw ``$s_w \\ge \\alpha$`` and blank widget areas. Here, before export:

- math in markdown cells (``$...$``, ``$$...$$``, outside code) is set aside and rendered at
  build time to MathML (``latex2mathml``), which browsers draw natively;
- each widget output becomes a static snapshot of its saved state (boxes, HTML, labels,
  progress bars, buttons), or its plain-text fallback;
- the template drops every script and stylesheet that would be fetched (plots are already
  inline PNGs).

``render_notebook(src, dest)`` writes one page; code cells are left out (the report is read,
the notebook is run).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# the lab template without the blocks that fetch scripts from a CDN
OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.S)
MATH = re.compile(r"(?<![\\$])\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?!\d)", re.S)
TOKEN = "T2AMATHTOKEN{}X"


def tex_to_mathml(tex: str, display: bool) -> str:
    """MathML for a TeX snippet; the TeX itself in a <code> when it cannot be converted."""
    from latex2mathml.converter import convert

    try:
        return convert(tex.strip(), display="block" if display else "inline")
    except Exception:  # noqa: BLE001 - an odd formula must not sink the page
        return f'<code class="tex">{html.escape(tex)}</code>'


def stash_math(text: str, store: list[str]) -> str:
    """Replace each formula outside code by a token; its MathML goes to ``store``."""
    def one(m):
        store.append(tex_to_mathml(m.group(1) or m.group(2), display=m.group(1) is not None))
        return TOKEN.format(len(store) - 1)

    parts = CODE.split(text)
    return "".join(p if i % 2 else MATH.sub(one, p) for i, p in enumerate(parts))


def restore_math(page: str, store: list[str]) -> str:
    return re.sub(TOKEN.format(r"(\d+)"), lambda m: store[int(m.group(1))], page)


def widget_html(model_id: str, state: dict, depth: int = 0) -> str | None:
    """A static picture of a saved widget (None for kinds without one)."""
    model = state.get(model_id)
    if model is None or depth > 8:
        return None
    name, s = model.get("model_name", ""), model.get("state", {})
    if name in ("HBoxModel", "VBoxModel", "BoxModel"):
        kids = [widget_html(str(ref).removeprefix("IPY_MODEL_"), state, depth + 1) for ref in s.get("children", [])]
        direction = "column" if name == "VBoxModel" else "row"
        return (f'<div class="t2a-widget" style="display:flex;flex-direction:{direction};gap:.5em;'
                f'align-items:center">' + "".join(k for k in kids if k) + "</div>")
    if name in ("HTMLModel", "HTMLMathModel"):
        return f"<span>{s.get('value', '')}</span>"  # the notebook's own HTML, as its outputs are
    if name == "LabelModel":
        return f"<span>{html.escape(str(s.get('value', '')))}</span>"
    if name in ("FloatProgressModel", "IntProgressModel"):
        return f'<progress value="{float(s.get("value", 0))}" max="{float(s.get("max", 100))}"></progress>'
    if name == "ButtonModel":
        return f"<button disabled>{html.escape(str(s.get('description', '')))}</button>"
    return None


def freeze_widgets(nb) -> None:
    """Widget outputs -> static HTML (or their plain text); the widget state is dropped."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            snapshot = widget_html(str(data[WIDGET_VIEW].get("model_id")), state)
            plain = data.get("text/plain", "")
            plain = "".join(plain) if isinstance(plain, list) else plain
            out["data"] = {"text/html": snapshot} if snapshot else {"text/plain": plain}
    nb.metadata.pop("widgets", None)


def exporter():
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", template_file="t2a_offline.html.j2", exclude_input=True,
                        extra_loaders=[DictLoader({"t2a_offline.html.j2": OFFLINE_TEMPLATE})])


def render_notebook(src, dest, html_exporter=None) -> Path:
    """Write an executed notebook as an offline HTML page without its code; returns ``dest``."""
    nb = nbformat.read(str(src), as_version=4)
    freeze_widgets(nb)
    store: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = stash_math(cell.source, store)
    body, _ = (html_exporter or exporter()).from_notebook_node(nb)
    body = re.sub(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>', "", restore_math(body, store))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(body, encoding="utf-8")
    return dest
