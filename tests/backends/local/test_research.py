"""Research-phase local backends: the SSRF guard, the web page fetcher and the markdown notes.

Every request goes to a real HTTP server on 127.0.0.1. Nothing may leave this machine: an autouse
fixture fails any socket connect to a non-loopback address. Hostnames that must look public
resolve through a patched ``socket.getaddrinfo`` to a public address, which the patched
``socket.create_connection`` then routes to the local server (a stand-in for a remote site).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpcore
import pytest

from include.orchestrator.backends.local.notes_folder import MarkdownNotes
from include.orchestrator.backends.local.web import HttpWebPages
from include.orchestrator.errors import ConnectionConfigError, FetchError, UnsafeURLError
from include.orchestrator.resilience.netguard import GuardedNetworkBackend, check_url

PUBLIC_IP = "93.184.215.14"  # looks public to the guard; the tests route it to the local server
HTML = "text/html; charset=utf-8"


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": HTML})
    delay: float = 0.0


class Site:
    """A loopback HTTP server answering from ``routes`` and recording the paths requested."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append(self.path)
                route = site.routes.get(self.path, Route(404, b"<h1>not found</h1>"))
                time.sleep(route.delay)
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: expected
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def page(self, path: str, html: str, **kwargs: object) -> str:
        self.routes[path] = Route(body=html.encode(), **kwargs)  # type: ignore[arg-type]
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = Route(status, headers={"Location": location})


@pytest.fixture(scope="module")
def _server() -> Iterator[Site]:
    site = Site()
    yield site
    site.server.shutdown()
    site.server.server_close()


@pytest.fixture
def site(_server: Site) -> Site:
    _server.routes.clear()
    _server.requests.clear()
    return _server


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test at once if anything tries to connect off this machine."""
    for method in ("connect", "connect_ex"):
        real = getattr(socket.socket, method)

        def guarded(sock: socket.socket, address: object, real: Callable = real) -> object:
            loopback = isinstance(address, tuple) and ipaddress.ip_address(address[0]).is_loopback
            assert loopback, f"non-loopback connect to {address}"
            return real(sock, address)

        monkeypatch.setattr(socket.socket, method, guarded)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch, site: Site) -> dict[str, Callable[[], list[str]]]:
    """Map hostnames to addresses (a callable, so answers can change); PUBLIC_IP reaches ``site``."""
    names: dict[str, Callable[[], list[str]]] = {}
    real_getaddrinfo, real_create = socket.getaddrinfo, socket.create_connection

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list[tuple]:
        if host not in names:
            return real_getaddrinfo(host, port, *args, **kwargs)  # type: ignore[arg-type]
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in names[host]()]

    def create_connection(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        if address[0] == PUBLIC_IP:
            address = ("127.0.0.1", site.port)
        return real_create(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return names


def web(allow_private: bool = True, **kwargs: object) -> HttpWebPages:
    return HttpWebPages("campaign_web", allow_private_network=allow_private, **kwargs)  # type: ignore[arg-type]


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>  FlowWatch \n pricing </title></head>
<body><svg><title>icon</title></svg>
<h2>Second   level
  first</h2>
<h1>Observability<br>for <em>pipelines</em></h1>
<h3>Agentless<script>alert(1)</script> setup</h3>
<h4>not kept</h4><p>Body text is not a headline.</p>
<h2>second LEVEL first</h2>
<h2>{long}</h2>
{many}
</body></html>"""


# -- headlines ---------------------------------------------------------------------------------


def test_headlines_are_extracted_in_order_normalised_deduplicated_and_bounded(site: Site) -> None:
    html = PAGE.format(long="x" * 300, many="".join(f"<h3>item {i}</h3>" for i in range(40)))
    page = web().fetch_headlines(site.page("/page", html))
    assert page.status == 200 and page.url == page.final_url == site.url("/page")
    assert page.title == "FlowWatch pricing"
    assert page.headlines[:4] == ["Second level first", "Observability for pipelines", "Agentless setup", "x" * 200]
    assert len(page.headlines) == 30 and page.headlines[-1] == "item 25"
    assert all(type(h) is str for h in page.headlines)


def test_localhost_is_fetched_when_the_connection_allows_private_networks(site: Site) -> None:
    site.page("/page", "<title>local</title><h1>Hi</h1>")
    assert web().fetch_headlines(site.url("/page", host="localhost")).headlines == ["Hi"]


# -- redirects ---------------------------------------------------------------------------------


def test_redirect_chain_is_followed_to_the_final_url(site: Site) -> None:
    site.page("/final", "<h1>Arrived</h1>")
    site.redirect("/a", site.url("/b"), 301)
    site.redirect("/b", "/c", 307)  # relative Location
    site.redirect("/c", "final", 308)
    page = web().fetch_headlines(site.url("/a"))
    assert (page.url, page.final_url, page.headlines) == (site.url("/a"), site.url("/final"), ["Arrived"])
    assert site.requests == ["/a", "/b", "/c", "/final"]


def test_more_than_five_redirects_fail_without_retry(site: Site) -> None:
    for i in range(6):
        site.redirect(f"/hop{i}", f"/hop{i + 1}")
    site.page("/hop6", "<h1>too far</h1>")
    with pytest.raises(FetchError, match="more than 5 redirects") as err:
        web().fetch_headlines(site.url("/hop0"))
    assert err.value.retryable is False
    assert "/hop6" not in site.requests


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "file:///etc/passwd",
        "http://user:secret@127.0.0.1/",
    ],
)
def test_redirect_to_a_refused_address_is_refused_even_with_private_allowed(site: Site, location: str) -> None:
    site.redirect("/go", location)
    with pytest.raises(UnsafeURLError, match="reached by redirect from") as err:
        web(allow_private=True).fetch_headlines(site.url("/go"))
    assert not isinstance(err.value, FetchError) and site.requests == ["/go"]


def test_public_site_redirecting_to_loopback_is_refused(site: Site, fake_dns: dict) -> None:
    fake_dns["competitor.test"] = lambda: [PUBLIC_IP]
    site.page("/ok", "<h1>Public page</h1>")
    site.redirect("/sneaky", site.url("/ok", host="localhost"))
    assert web(allow_private=False).fetch_headlines("http://competitor.test/ok").headlines == ["Public page"]
    with pytest.raises(UnsafeURLError, match="localhost.*loopback"):
        web(allow_private=False).fetch_headlines("http://competitor.test/sneaky")
    assert site.requests == ["/ok", "/sneaky"]


def test_dns_rebinding_is_refused_at_connect_time(site: Site, fake_dns: dict) -> None:
    answers = iter([[PUBLIC_IP], ["127.0.0.1"]])  # public for the pre-check, loopback to connect
    fake_dns["rebind.test"] = lambda: next(answers)
    with pytest.raises(UnsafeURLError, match="127.0.0.1.*loopback"):
        web(allow_private=False).fetch_headlines(site.url("/page", host="rebind.test"))
    assert site.requests == []


# -- the guard itself (nothing here connects) --------------------------------------------------

ALWAYS_REFUSED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/",
    "http://metadata.google.internal/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "file:///etc/passwd",
    "ftp://127.0.0.1/",
    "http://user:pass@127.0.0.1/",
    "http://user@localhost/",
]
PRIVATE = [
    "http://127.0.0.1/",
    "http://[::1]/",
    "http://localhost/",
    "http://10.1.2.3/",
    "http://192.168.0.1/",
    "http://100.64.0.1/",
    "http://[::ffff:127.0.0.1]/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
]


@pytest.mark.parametrize("url", ALWAYS_REFUSED + PRIVATE)
def test_guard_refuses_without_private_network(url: str) -> None:
    with pytest.raises(UnsafeURLError) as err:
        check_url(url, allow_private=False)
    assert url in str(err.value)


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
def test_guard_still_refuses_metadata_link_local_and_odd_urls_with_private_allowed(url: str) -> None:
    with pytest.raises(UnsafeURLError):
        check_url(url, allow_private=True)


@pytest.mark.parametrize("url", PRIVATE)
def test_guard_allows_private_addresses_when_asked(url: str) -> None:
    check_url(url, allow_private=True)


def test_guard_refuses_a_host_if_any_address_is_refused(fake_dns: dict) -> None:
    fake_dns["mixed.test"] = lambda: [PUBLIC_IP, "10.0.0.7"]
    fake_dns["public.test"] = lambda: [PUBLIC_IP]
    fake_dns["meta.test"] = lambda: ["169.254.169.254"]
    check_url("https://public.test/x", allow_private=False)
    with pytest.raises(UnsafeURLError, match="10.0.0.7.*private"):
        check_url("https://mixed.test/x", allow_private=False)
    with pytest.raises(UnsafeURLError, match="metadata"):
        check_url("https://meta.test/x", allow_private=True)


def test_guard_connects_to_the_checked_address_and_keeps_the_hostname_for_tls(fake_dns: dict) -> None:
    fake_dns["shop.test"] = lambda: [PUBLIC_IP]
    seen: dict[str, object] = {}

    class Stream(httpcore.NetworkStream):
        def start_tls(
            self, ssl_context: object, server_hostname: str | None = None, timeout: float | None = None
        ) -> httpcore.NetworkStream:
            seen["sni"] = server_hostname
            raise httpcore.ConnectError("stop before any TLS traffic")

        def close(self) -> None:
            pass

    class Recorder(httpcore.SyncBackend):
        def connect_tcp(self, host: str, port: int, *args: object, **kwargs: object) -> httpcore.NetworkStream:
            seen["address"] = (host, port)
            return Stream()

    with httpcore.ConnectionPool(network_backend=GuardedNetworkBackend(False, Recorder())) as pool:
        with pytest.raises(httpcore.ConnectError):
            pool.request("GET", "https://shop.test/pricing")
    assert seen == {"address": (PUBLIC_IP, 443), "sni": "shop.test"}


def test_fetch_refuses_loopback_without_private_network(site: Site) -> None:
    with pytest.raises(UnsafeURLError, match="loopback"):
        web(allow_private=False).fetch_headlines(site.url("/page"))
    assert site.requests == []


# -- HTTP errors and limits --------------------------------------------------------------------


# 429 and 5xx as every backend's (retryable, Retry-After), timeouts and refused connections: tests/backends/test_contract.py
@pytest.mark.parametrize("status,retryable", [(404, False), (403, False), (503, True)])
def test_http_errors_say_whether_a_retry_can_help(site: Site, status: int, retryable: bool) -> None:
    site.routes["/e"] = Route(status, b"<h1>error</h1>", {"Content-Type": HTML, "Retry-After": "7"})
    with pytest.raises(FetchError, match=f"HTTP {status}") as err:
        web().fetch_headlines(site.url("/e"))
    assert (err.value.status, err.value.retryable, err.value.url) == (status, retryable, site.url("/e"))
    assert err.value.retry_after == 7.0


def test_oversized_body_is_cut_at_max_bytes(site: Site) -> None:
    html = "<title>Big</title><h1>Early</h1>" + "<p>padding</p>" * 300_000 + "<h1>Late</h1>"  # ~4 MB
    page = web(max_bytes=10_000).fetch_headlines(site.page("/big", html))
    assert (page.title, page.headlines) == ("Big", ["Early"])


@pytest.mark.parametrize("content_type", ["application/json", "image/png", "text/plain", None])
def test_non_html_responses_are_refused(site: Site, content_type: str | None) -> None:
    site.routes["/data"] = Route(body=b'{"h1": "x"}', headers={"Content-Type": content_type} if content_type else {})
    with pytest.raises(FetchError, match="not an HTML page") as err:
        web().fetch_headlines(site.url("/data"))
    assert (err.value.status, err.value.retryable) == (200, False)


# -- notes -------------------------------------------------------------------------------------


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


def test_notes_rank_title_over_tags_over_body(tmp_path: Path) -> None:
    write(tmp_path, "body.md", "# Misc\n\nTeams ask about lineage often.\n")
    write(tmp_path, "tagged.md", "---\ntags: [lineage, alerts]\n---\n# Alerting notes\n\nNothing else.\n")
    write(tmp_path, "deep/titled.md", "---\ntitle: Lineage for data teams\ntags: costs\n---\nWhy lineage wins.\n")
    write(tmp_path, "cost-per-pipeline.md", "Nobody shows COST per pipeline.\n")
    write(tmp_path, "unrelated.md", "# Webinars\n\nLive demos work.\n")
    write(tmp_path, ".drafts/hidden.md", "# Lineage lineage\n")
    notes = MarkdownNotes("campaign_notes", tmp_path)

    found = notes.search("The LINEAGE of data", limit=10)
    assert [n.source for n in found] == ["deep/titled.md", "tagged.md", "body.md"]
    assert [n.title for n in found] == ["Lineage for data teams", "Alerting notes", "Misc"]
    assert found[0].text == "Why lineage wins."  # front matter is not part of the text
    assert [n.title for n in notes.search("cost", limit=1)] == ["cost-per-pipeline"]  # file stem fallback
    assert len(notes.search("lineage", limit=2)) == 2
    assert notes.search("the and of", limit=5) == [] and notes.search("quantum", limit=5) == []


def test_notes_errors_name_the_connection_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConnectionConfigError, match=f"campaign_notes.*{tmp_path / 'missing'}"):
        MarkdownNotes("campaign_notes", tmp_path / "missing").search("x", 3)
    write(tmp_path, "bad.md", "---\ntitle: [unclosed\n---\nbody\n")
    with pytest.raises(ValueError, match="campaign_notes.*bad.md"):
        MarkdownNotes("campaign_notes", tmp_path).search("body", 3)


def test_shipped_research_notes_are_searchable() -> None:
    folder = Path(__file__).resolve().parents[3] / "include" / "research_notes"
    found = MarkdownNotes("campaign_notes", folder).search("changelog readers", limit=3)
    assert found and found[0].source == "changelog-readers.md"
