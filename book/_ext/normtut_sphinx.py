"""Small Sphinx fixes for the normtut book (loaded through `sphinx.local_extensions`).

- Jupyter Book 1.x registers sphinx-thebe's inline configuration script twice, so every page
  declares ``const THEBE_JS_URL`` twice and the browser reports a SyntaxError. We drop exact
  duplicates from each page's script list.
- myst-nb's ``nb_merge_streams`` merges every stream output of a cell into its first one, in
  place: the executed notebook it then writes (``_build/jupyter_execute``, the page's download)
  holds each line twice, and text printed after a figure moves above it. We merge only
  *adjacent* streams, on copies.
- The execution table (``{nb-exec-table}``) marks each notebook with the emoji "✅", which the
  build machines' fonts cannot draw (an empty box in the page); we write "ok" instead.
"""

from __future__ import annotations

import copy


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen = set()
    unique = []
    for script in scripts:
        # inline scripts come with filename None or "" depending on who added them
        key = (getattr(script, "filename", None) or "", script.attributes.get("body"))
        if key in seen:
            continue
        seen.add(key)
        unique.append(script)
    scripts[:] = unique


def coalesce_adjacent_streams(outputs: list) -> list:
    """Merge each run of consecutive stream outputs (myst-nb's rules within the run), leaving
    the cell's own outputs untouched and the order of text and figures as executed."""
    from myst_nb.core.utils import coalesce_streams

    merged: list = []
    run: list = []
    for output in list(outputs or []) + [None]:
        if output is not None and output.get("output_type") == "stream":
            run.append(copy.deepcopy(output))
            continue
        if run:
            merged.extend(coalesce_streams(run))
            run = []
        if output is not None:
            merged.append(output)
    return merged


def _merge_streams_on_copies() -> None:
    import myst_nb.core.render as render

    render.coalesce_streams = coalesce_adjacent_streams


STATUS_WORDS = {"\u2705": "ok", "\u274c": "failed"}


def _plain_status(app, doctree, docname):
    from docutils import nodes

    for text in list(doctree.findall(nodes.Text)):
        word = STATUS_WORDS.get(text.astext().strip())
        if word is not None:
            text.parent.replace(text, nodes.Text(word))


def setup(app):
    app.connect("doctree-resolved", _plain_status)
    app.connect("html-page-context", _dedupe_scripts)
    _merge_streams_on_copies()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
