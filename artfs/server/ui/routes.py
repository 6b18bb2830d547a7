"""The registry web page's routes: read-only HTML under ``/ui/`` on the API port.

Every page is rendered on the server from the registry calls the JSON API makes
(``Registry.list_projects``/``get_artifact``/``get_version``/``manifest_gz``/
``manifest_canonical_gz``/``lineage``),
with the same checks: a token is a ``Principal`` (``server/auth.py``), a project page
needs read on that project, the project list and the lineage walk leave out what the
token may not read, and a download goes through the API's own blob locator (signed
data-server URLs or presigned store URLs) as a 307 redirect. The browser keeps the token
in a session cookie (HttpOnly, SameSite=Strict, path ``/ui``) set by the login form, so
it is typed once per browser session and never readable by page scripts; an
``Authorization`` header works too (scripts, the benchmark). With auth off there is no
prompt. Handlers run their registry calls and the template in one worker thread.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from importlib import resources
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ...auth import READ, Principal
from ...errors import ArtfsError, InvalidInput, NotFound, Unauthorized
from ...hashing import sha256_hex
from ...lineage import visible_lineage
from ...lineage_graph import VERSION, LineageGraph, LineageNode, hops
from ...names import artifact_name, project_name
from ...registry import Registry
from ..auth import Authenticator
from ..requestio import has_refs, run
from . import views
from .canonical import classify_canonical
from .layout import Node, render_svg

COOKIE = "artfs_ui_token"
MAX_LOGIN_BODY = 4096
CACHE_ROWS = 250_000  # manifest rows kept decoded (~300 bytes each): two 100k versions
KEPT_ROWS = 200_000  # rows referenced by kept directory scans, and by kept comparisons
ROW_FETCHERS = 4  # versions of one page read at once
MAX_DRAWN = 300  # lineage nodes drawn at most (nearest the root first)
DEFAULT_HOPS = 3
STATIC = {"ui.css": "text/css", "ui.js": "text/javascript"}

K = TypeVar("K")
V = TypeVar("V")
Locate = Callable[[Request, list[str], Principal], tuple[dict[str, Any], list[str]]]
"""The API's blob locator: (request, digests, principal) -> (found {sha: {"url": ...}}, missing)."""
Page = Callable[[Request, Principal], str]


class Kept(Generic[K, V]):
    """Values computed from immutable inputs (a manifest's digest names exactly one
    manifest, so nothing here is ever stale), least recently used first out, bounded by
    their total ``weight`` (manifest rows held or referenced). A value heavier than the
    whole bound is handed out but not kept."""

    def __init__(self, max_weight: int, weight: Callable[[V], int]) -> None:
        self.max_weight = max_weight
        self._weight = weight
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[], V]) -> V:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found[0]
        value = make()  # outside the lock: two threads may both make it, once each
        w = self._weight(value)
        with self._lock:
            if key not in self._entries and w <= self.max_weight:
                self._entries[key] = (value, w)
                self._total += w
                while self._total > self.max_weight:
                    _, (_, old) = self._entries.popitem(last=False)
                    self._total -= old
        return value


def manifest_cache(max_rows: int = CACHE_ROWS) -> Kept[str, list[list[Any]]]:
    """Decoded manifests (the stored ``[path, size, sha256]`` lists) by digest."""
    return Kept(max_rows, len)


def decode_files(data: bytes) -> list[list[Any]]:
    files: list[list[Any]] = json.loads(gzip.decompress(data))["files"]
    return files


def decode_refs(data: bytes) -> views.RefMarks:
    """A stored manifest's external refs; one without is told by its first bytes, not
    inflated (``requestio.has_refs``)."""
    if not has_refs(data):
        return views.NO_REFS
    doc = json.loads(gzip.decompress(data))
    return views.ref_marks(doc["refs"], doc["files"])


class UiPages:
    def __init__(self, registry: Registry, auth: Authenticator, locate: Locate) -> None:
        self.r = registry
        self.auth = auth
        self.locate = locate
        self.manifests = manifest_cache()
        # directories scanned, by (digest, path), and comparisons, by (digest a, digest b):
        # paging through one costs no new pass over the manifest
        self.dirs: Kept[tuple[str, str], views.DirScan] = Kept(
            KEPT_ROWS, lambda d: len(d.plain) + len(d.dirs)
        )
        self.diffs: Kept[tuple[str, str], views.Classified] = Kept(
            KEPT_ROWS, lambda c: len(c.added) + len(c.removed) + len(c.changed)
        )
        self.refs: Kept[str, views.RefMarks] = Kept(KEPT_ROWS, lambda m: len(m.urls) + 1)
        self.env = Environment(
            loader=PackageLoader("artfs.server.ui", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(human_size=views.human_size, iso=views.iso, urlencode=urlencode)
        self.static = {
            name: resources.files("artfs.server.ui").joinpath("static", name).read_bytes()
            for name in STATIC
        }

    # --- plumbing ------------------------------------------------------------------
    def render(self, template: str, who: Principal | None, **context: Any) -> str:
        return self.env.get_template(template).render(who=who, auth=self.auth.enabled, **context)

    async def who(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        cookie = request.cookies.get(COOKIE)
        if header is None and cookie:
            header = f"Bearer {cookie}"
        return await self.auth.principal(header)

    def login_page(self, request: Request, message: str, status: int) -> Response:
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.url.path.startswith("/ui/login"):
            nxt = "/ui/"  # (back to the form itself would ask again)
        body = self.render("login.html", None, message=message, next=nxt)
        resp = HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
        if request.cookies.get(COOKIE):
            resp.delete_cookie(COOKIE, path="/ui")
        return resp

    def page(self, fn: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                who = await self.who(request)
            except Unauthorized as e:
                cookie = request.cookies.get(COOKIE) or request.headers.get("authorization")
                return self.login_page(request, e.message if cookie else "", 401)
            try:
                body = await run(fn, request, who)
            except ArtfsError as e:
                body = self.render("error.html", who, status=e.http_status, message=e.message)
                return HTMLResponse(body, status_code=e.http_status)
            return HTMLResponse(body, headers={"Cache-Control": "no-store"})

        return endpoint

    def _load(self, project: str, artifact: str, info_digest: str, number: int) -> bytes:
        digest, data = self.r.manifest_gz(project, artifact, number)
        if digest != info_digest:  # (a version's manifest never changes)
            raise NotFound(f"{project}/{artifact}:v{number} changed while read")
        return data

    def files(self, project: str, artifact: str, info_digest: str, number: int) -> list[list[Any]]:
        load = partial(self._load, project, artifact, info_digest, number)
        return self.manifests.get(info_digest, lambda: decode_files(load()))

    def ref_marks(
        self, project: str, artifact: str, info_digest: str, number: int
    ) -> views.RefMarks:
        load = partial(self._load, project, artifact, info_digest, number)
        return self.refs.get(info_digest, lambda: decode_refs(load()))

    def canonical(self, project: str, artifact: str, info_digest: str, number: int) -> bytes:
        """A version's manifest in canonical form, as stored (``canonical.py`` compares two;
        nothing is kept: a comparison is kept whole, in ``self.diffs``)."""
        digest, _, data = self.r.manifest_canonical_gz(project, artifact, number)
        if digest != info_digest:  # (a version's manifest never changes)
            raise NotFound(f"{project}/{artifact}:v{number} changed while read")
        return gzip.decompress(data)

    # --- pages -----------------------------------------------------------------------
    def projects(self, request: Request, who: Principal) -> str:
        projects = [p for p in self.r.list_projects() if who.can(READ, p.name)]
        return self.render("projects.html", who, projects=projects)

    def artifacts(self, request: Request, who: Principal) -> str:
        project = _project(request, who)
        arts = self.r.list_artifacts(project)
        rows = [(a, views.latest_number(a)) for a in arts]
        return self.render("artifacts.html", who, project=project, rows=rows)

    def versions(self, request: Request, who: Principal) -> str:
        project, artifact = _artifact(request, who)
        art = self.r.get_artifact(project, artifact)
        pager, numbers = views.version_page(art, views.page_param(request.query_params.get("page")))
        infos = self.r.get_versions(project, artifact, numbers)  # one read (versionsdb.py)
        rows = [(i, views.tags_of(i), views.meta_text(i.metadata)) for i in infos]
        return self.render(
            "versions.html",
            who,
            project=project,
            art=art,
            rows=rows,
            vpager=pager,
            aliases=views.aliases_by_number(art.aliases),
            latest=views.latest_number(art),
        )

    def version(self, request: Request, who: Principal) -> str:
        project, artifact = _artifact(request, who)
        number = int(request.path_params["number"])
        info = visible_lineage(self.r.get_version(project, artifact, f"v{number}"), _readable(who))
        q = request.query_params
        directory = q.get("dir", "").strip("/")
        scan = self.dirs.get(
            (info.digest, directory),
            lambda: views.scan_dir(self.files(project, artifact, info.digest, number), directory),
        )
        refs = self.ref_marks(project, artifact, info.digest, number)
        listing = views.page_dir(scan, views.page_param(q.get("page")), refs)
        base = str(request.base_url).rstrip("/")
        return self.render(
            "version.html",
            who,
            info=info,
            tags=views.tags_of(info),
            metadata=json.dumps(info.metadata, indent=2, ensure_ascii=False),
            listing=listing,
            refs=refs,
            crumbs=views.breadcrumbs(listing.directory),
            commands=views.commands(base, info),
        )

    def compare(self, request: Request, who: Principal) -> str:
        project, artifact = _artifact(request, who)
        q = request.query_params
        art = self.r.get_artifact(project, artifact)
        numbers = sorted(v.number for v in art.versions)
        if not numbers:
            raise NotFound(f"artifact {project}/{artifact} has no versions yet")
        a = _number(q.get("a"), "a", numbers[-2] if len(numbers) > 1 else numbers[-1])
        b = _number(q.get("b"), "b", numbers[-1])
        ia = self.r.get_version(project, artifact, f"v{a}")
        ib = self.r.get_version(project, artifact, f"v{b}")

        def classified_now() -> views.Classified:
            # The two reads overlap (the database and zlib let go of the GIL): 2 x 0.9 MB
            # from PostgreSQL and 2 x 8.5 MB inflated, for two 100,000-file versions
            with ThreadPoolExecutor(1) as pool:
                first = pool.submit(self.canonical, project, artifact, ia.digest, a)
                second = self.canonical(project, artifact, ib.digest, b)
                return classify_canonical(first.result(), second)

        classified = self.diffs.get((ia.digest, ib.digest), classified_now)
        show = q.get("show", "changed")
        diff = views.compare(classified, show, views.page_param(q.get("page")))
        meta, more = views.metadata_side_by_side(ia.metadata, ib.metadata)
        return self.render(
            "compare.html", who, art=art, a=ia, b=ib, diff=diff, meta=meta, more=more
        )

    def lineage(self, request: Request, who: Principal) -> str:
        project, artifact = _artifact(request, who)
        number = int(request.path_params["number"])
        q = request.query_params
        up = hops(q.get("up", str(DEFAULT_HOPS)), "up")
        down = hops(q.get("down", str(DEFAULT_HOPS)), "down")
        graph = self.r.lineage(project, artifact, number, up=up, down=down, can_read=_readable(who))
        shown = drawn_nodes(graph)
        svg = render_svg([svg_node(n, graph.root) for n in shown], graph_edges(graph, shown))
        return self.render(
            "lineage.html",
            who,
            project=project,
            artifact=artifact,
            number=number,
            graph=graph,
            nodes=shown,
            svg=svg,
            up=q.get("up", str(DEFAULT_HOPS)),
            down=q.get("down", str(DEFAULT_HOPS)),
            capped=len(graph.nodes) - len(shown),
            href=version_href,
        )

    # --- login, downloads, static files ------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        if not self.auth.enabled:
            return RedirectResponse("/ui/", status_code=303)
        return self.login_page(request, "", 200)

    async def login(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                raise InvalidInput("login form too large")
        form = parse_qs(body.decode("utf-8", "replace"))
        token = form.get("token", [""])[0].strip()
        nxt = form.get("next", ["/ui/"])[0]
        if not nxt.startswith("/ui/") or nxt.startswith(("/ui//", "/ui/login")):
            nxt = "/ui/"  # never a redirect off this registry, nor back to the form
        try:
            await self.auth.principal(f"Bearer {token}" if token else None)
        except Unauthorized as e:
            body_html = self.render("login.html", None, message=e.message, next=nxt)
            return HTMLResponse(body_html, status_code=401)
        resp = RedirectResponse(nxt, status_code=303)
        secure = request.url.scheme == "https"
        resp.set_cookie(COOKIE, token, path="/ui", httponly=True, samesite="strict", secure=secure)
        return resp

    async def logout(self, request: Request) -> Response:
        resp = RedirectResponse("/ui/login" if self.auth.enabled else "/ui/", status_code=303)
        resp.delete_cookie(COOKIE, path="/ui")
        return resp

    async def blob(self, request: Request) -> Response:
        """A file's bytes: a redirect to the URL ``POST /v1/blobs/locate`` would hand out."""
        try:
            who = await self.who(request)
        except Unauthorized as e:
            return self.login_page(request, e.message, 401)
        sha = sha256_hex(request.path_params["sha"])
        found, _ = await run(self.locate, request, [sha], who)
        if sha not in found:
            body = self.render("error.html", who, status=404, message=f"blob {sha} not found")
            return HTMLResponse(body, status_code=404)
        return RedirectResponse(found[sha]["url"], status_code=307)

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.static:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(
            self.static[name],
            media_type=STATIC[name],
            headers={"Cache-Control": "public, max-age=3600"},
        )

    def routes(self) -> list[BaseRoute]:
        art = "/ui/p/{project}/{artifact}"
        return [
            Route("/ui", lambda request: RedirectResponse("/ui/", status_code=308)),
            Route("/ui/", self.page(self.projects), methods=["GET"]),
            Route("/ui/login", self.login_form, methods=["GET"]),
            Route("/ui/login", self.login, methods=["POST"]),
            Route("/ui/logout", self.logout, methods=["POST"]),
            Route("/ui/static/{name}", self.static_file, methods=["GET"]),
            Route("/ui/blob/{sha}", self.blob, methods=["GET"]),
            Route("/ui/p/{project}", self.page(self.artifacts), methods=["GET"]),
            Route(art, self.page(self.versions), methods=["GET"]),
            Route(f"{art}/compare", self.page(self.compare), methods=["GET"]),
            Route(f"{art}/v{{number:int}}", self.page(self.version), methods=["GET"]),
            Route(f"{art}/v{{number:int}}/lineage", self.page(self.lineage), methods=["GET"]),
        ]


def ui_routes(registry: Registry, auth: Authenticator, locate: Locate) -> list[BaseRoute]:
    """The ``/ui/`` routes, for the API's route list."""
    return UiPages(registry, auth, locate).routes()


# --- helpers (pure) ------------------------------------------------------------------
def _readable(who: Principal) -> Callable[[str], bool]:
    return lambda project: who.can(READ, project)


def _project(request: Request, who: Principal) -> str:
    project = project_name(request.path_params["project"])
    who.require(READ, project)
    return project


def _artifact(request: Request, who: Principal) -> tuple[str, str]:
    return _project(request, who), artifact_name(request.path_params["artifact"])


def _number(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    text = value[1:] if value.startswith("v") else value
    if not text.isdigit():
        raise InvalidInput(f"'{name}' must be a version number such as v3, not {value[:20]!r}")
    return int(text)


def version_href(node: LineageNode) -> str | None:
    if node.kind != VERSION or node.hidden or node.deleted:
        return None
    return f"/ui/p/{node.project}/{node.artifact}/v{node.number}"


def drawn_nodes(graph: LineageGraph) -> list[LineageNode]:
    """The nodes a page draws: all, or the ``MAX_DRAWN`` nearest the root."""
    if len(graph.nodes) <= MAX_DRAWN:
        return list(graph.nodes)
    return sorted(graph.nodes, key=lambda n: abs(n.distance))[:MAX_DRAWN]


def graph_edges(graph: LineageGraph, shown: Sequence[LineageNode]) -> list[tuple[str, str]]:
    ids = {n.id for n in shown}
    return [(e.source, e.target) for e in graph.edges if e.source in ids and e.target in ids]


def svg_node(node: LineageNode, root: str) -> Node:
    label = node.label + (" (deleted)" if node.deleted else "")
    return Node(
        node.id,
        label,
        node.kind,
        version_href(node),
        root=node.id == root,
        muted=node.hidden or node.deleted,
    )
