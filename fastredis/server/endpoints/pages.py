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

__all__ = ["dashboard", "page_html", "playground_html", "viewer", "wants_html"]

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


def _page(name: str, config: dict[str, object], title: str = "fastredis") -> HTMLResponse:
    # JSON in a <script type=application/json>: "</" escaped so no value ends the tag
    data = json.dumps(config).replace("</", "<\\/")
    body = page_html(name).replace("{{title}}", html.escape(title)).replace("{{config}}", data)
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


def wants_html(request: Request) -> bool:
    """Whether the client asked for HTML before JSON (a browser's Accept header)."""
    accept = request.headers.get("accept", "")
    html_at, json_at = accept.find("text/html"), accept.find("application/json")
    return html_at >= 0 and (json_at < 0 or html_at < json_at)


async def dashboard(request: Request) -> Response:
    """The stream list for browsers."""
    return _page("dashboard.html", {}, "fastredis streams")


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
    return _page("viewer.html", {"sid": sid}, f"{sid} · fastredis")


def playground_html() -> str:
    """The GraphQL playground (served by the GraphQL app to browsers)."""
    return (
        page_html("playground.html")
        .replace("{{title}}", "fastredis GraphQL")
        .replace("{{config}}", "{}")
    )
