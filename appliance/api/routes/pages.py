"""The agent desktop (/desk/) and the supervisor wallboard (/wall/), and the pages' files (/static/...).

Same origin as the API, so the session cookie and the API need no CORS. Everything the pages load is
in the wheel (aicc/appliance/web/static, JsSIP and uPlot included, built from the pinned npm packages):
nothing comes from the internet. The pages are sent with a Content-Security-Policy that allows
scripts, styles and connections to this origin only, plus the SIP proxies' secure WebSockets for the
softphone. The operations page (/ops/, routes/ops.py) uses the same headers through page_headers().
"""

from __future__ import annotations

import mimetypes
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from aicc.appliance.api.deps import ApiError, get_config

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"
PAGES = {"desk": "desk.html", "wall": "wall.html"}
HTML = "text/html; charset=utf-8"


@cache
def _csp(ws_origins: tuple[str, ...]) -> str:
    connect = " ".join(("'self'", *ws_origins))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"media-src 'self' blob:; connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'; object-src 'none'"
    )


def _origins(urls: list[str]) -> tuple[str, ...]:
    return tuple(sorted({f"{u.scheme}://{u.netloc}" for u in map(urlsplit, urls)}))


def page_headers(connect_urls: list[str] | None = None, *, microphone: bool = False) -> dict[str, str]:
    """Headers of every page: its CSP (connections to this origin and to the origins of
    `connect_urls`), revalidation on each load, and the browser features it may use."""
    return {
        "Content-Security-Policy": _csp(_origins(connect_urls or [])),
        "Cache-Control": "no-cache",
        "Permissions-Policy": f"microphone=({'self' if microphone else ''}), camera=(), geolocation=()",
    }


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/desk/", status_code=302)


@router.get("/desk")
@router.get("/wall")
async def add_slash(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url.path + "/", status_code=301)


@router.get("/desk/")
@router.get("/wall/")
async def page(request: Request) -> FileResponse:
    name = PAGES[request.url.path.strip("/")]
    headers = page_headers(get_config(request).sip_ws_urls, microphone=True)
    return FileResponse(STATIC / name, media_type=HTML, headers=headers)


@router.get("/static/{path:path}")
async def static(path: str) -> Response:
    """A file of the pages; revalidated on each load (ETag), so an upgrade shows at once."""
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC) or not target.is_file() or target.suffix == ".html":
        raise ApiError(404, "not_found", f"no file /static/{path}")
    media_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    if media_type.startswith("text/") or target.suffix == ".js":
        media_type = f"{'text/javascript' if target.suffix == '.js' else media_type}; charset=utf-8"
    return FileResponse(target, media_type=media_type, headers={"Cache-Control": "no-cache"})
