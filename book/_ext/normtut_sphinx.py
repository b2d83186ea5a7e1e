"""Small Sphinx fixes for the normtut book (loaded through `sphinx.local_extensions`).

- Jupyter Book 1.x registers sphinx-thebe's inline configuration script twice, so every page
  declares ``const THEBE_JS_URL`` twice and the browser reports a SyntaxError. We drop exact
  duplicates from each page's script list.
"""

from __future__ import annotations


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


def setup(app):
    app.connect("html-page-context", _dedupe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
