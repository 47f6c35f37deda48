"""The browser pages: the ``/`` dashboard, the ``/view/{sid}`` viewer and the GraphQL
playground. Their HTML, CSS and JS are package data (``fastredis/server/endpoints/pages/``);
each page is served as one document with its CSS and JS inlined, so it loads nothing
from anywhere else (and a ``?token=`` in its address is all it needs to get in)."""

from __future__ import annotations

import html
import json
import re
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from fastredis.server.edge.auth import require_read
from fastredis.server.edge.errors import failure
from fastredis.server.edge.protocol import BadInput, parse_sids

__all__ = ["dashboard", "page_html", "playground_html", "render", "viewer", "wants_html"]

_INCLUDE = re.compile(r"<!--\s*include:\s*([\w.-]+)\s*-->")


@cache
def _asset(name: str) -> str:
    pages = resources.files("fastredis.server.endpoints").joinpath("pages")
    return pages.joinpath(name).read_text("utf-8")


@cache
def page_html(name: str) -> str:
    """Page `name` with its ``<!-- include: file -->`` lines replaced by the files
    (CSS in a <style>, JS in a <script>)."""

    def include(match: re.Match[str]) -> str:
        file = match.group(1)
        body = _asset(file)
        if file.endswith(".css"):
            return f"<style>\n{body}</style>"
        return f"<script>\n{body}</script>"

    return _INCLUDE.sub(include, _asset(name))


_SLOT = re.compile(r"\{\{(title|config)\}\}")
# In a <script>, "</script" ends it and "<!--" (then "<script") changes how the HTML
# parser reads the rest: JSON with <, > and & as \u escapes has none of them, and
# JSON.parse reads it back unchanged.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def render(name: str, config: dict[str, object], title: str) -> str:
    """Page `name` with its title (HTML-escaped) and its config (JSON, safe inside its
    <script type=application/json>) put in, in one pass: a value is never read again
    as a slot."""
    values = {
        "title": html.escape(title),
        "config": json.dumps(config).translate(_SCRIPT_SAFE),
    }
    return _SLOT.sub(lambda match: values[match[1]], page_html(name))


def _page(
    request: Request, name: str, config: dict[str, object], title: str = "fastredis"
) -> HTMLResponse:
    # root: the sub-path a reverse proxy serves us at, before every link the page makes
    config = {"root": request.scope.get("root_path", ""), **config}
    return HTMLResponse(render(name, config, title), headers={"Cache-Control": "no-store"})


def wants_html(request: Request) -> bool:
    """Whether the client asked for HTML before JSON (a browser's Accept header)."""
    accept = request.headers.get("accept", "")
    html_at, json_at = accept.find("text/html"), accept.find("application/json")
    return html_at >= 0 and (json_at < 0 or html_at < json_at)


async def dashboard(request: Request) -> Response:
    """The stream list for browsers."""
    return _page(request, "dashboard.html", {}, "fastredis streams")


async def viewer(request: Request) -> Response:
    """The live view of one stream."""
    sid = request.path_params["sid"]
    try:
        sids = parse_sids(sid)
        if len(sids) != 1:
            raise BadInput(f"the viewer shows one stream, not {len(sids)}: open each by itself")
        require_read(request, sids)
    except BadInput as exc:
        return failure(exc).response()
    return _page(request, "viewer.html", {"sid": sid}, f"{sid} · fastredis")


def playground_html(root_path: str = "") -> str:
    """The GraphQL playground (served by the GraphQL app to browsers); `root_path`: the
    sub-path a reverse proxy serves the server at."""
    return render("playground.html", {"root": root_path}, "fastredis GraphQL")
