"""Issue 15, classes 6 and 7: every outbound call has a total deadline, and the SSRF guard refuses
every cloud metadata and host-agent address.

The deadline tests run real loopback servers that misbehave the way a slow-loris peer does: one
trickles the status line and headers (one byte every 0.5 s: every read gets a byte, so no per-read
timeout ever fires), one sends its headers and then trickles the body, one accepts the connection
and never answers. Each server gives up after TRICKLE_FOR seconds, so a client without a total
deadline fails the elapsed-time bound instead of hanging the suite.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from airflow.sdk import Connection

from include.orchestrator.backends.cloud.github import GithubApi
from include.orchestrator.backends.cloud.grafana import GrafanaApi
from include.orchestrator.backends.cloud.slack import SlackNotifier
from include.orchestrator.backends.local.web import HttpWebPages
from include.orchestrator.domain.dashboard import campaign_dashboard
from include.orchestrator.domain.ports import Dashboard, Message
from include.orchestrator.errors import DeadlineExceeded, FetchError, ServiceError, UnsafeURLError
from include.orchestrator.resilience.deadlines import within
from include.orchestrator.resilience.netguard import METADATA_ADDRESSES, METADATA_HOSTNAMES, check_url

DEADLINE = 2.0
SLACK = 2.0  # scheduling noise on 2 shared cores: the bound is DEADLINE + SLACK
TRICKLE_FOR = 15.0  # the servers give up after this: far beyond the bound, short enough not to hang
MODES = ("headers", "body", "silent")


@contextmanager
def misbehaving_server(mode: str, content_type: str = "text/html") -> Iterator[str]:
    """A loopback HTTP server that trickles its headers or its body one byte per 0.5 s, or never answers."""
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)

    def trickle(conn: socket.socket, data: bytes) -> None:
        ends = time.monotonic() + TRICKLE_FOR
        for byte in data:
            if stop.is_set() or time.monotonic() > ends:
                return
            conn.sendall(bytes([byte]))
            stop.wait(0.5)

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                request = conn.recv(65536)  # the request (its first packet is enough)
                if mode == "body" and request.startswith(b"HEAD "):  # an answer to HEAD has no body to trickle
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n")
                elif mode == "headers":
                    trickle(conn, f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nX-Padding: {'a' * 200}".encode())
                elif mode == "body":
                    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n".encode())
                    trickle(conn, b"<" + b"x" * 99_999)
                else:
                    stop.wait(TRICKLE_FOR)
            except OSError:  # the client hung up: what a deadline does
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join(5)
        server.close()


def timed(call: Callable[[], object], error: type[Exception]) -> tuple[float, Exception]:
    started = time.monotonic()
    with pytest.raises(error) as raised:
        call()
    return time.monotonic() - started, raised.value


def assert_stopped_at_the_deadline(elapsed: float, error: Exception, service: str) -> None:
    assert DEADLINE - 0.1 <= elapsed < DEADLINE + SLACK, f"stopped after {elapsed:.2f} s"
    assert getattr(error, "retryable", False) is True
    text = str(error)
    assert service in text and "127.0.0.1" in text and f"within {DEADLINE:g} s" in text and "total deadline" in text, text


# --- class 6: a total deadline for every call ------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_the_page_fetch_stops_at_its_deadline(mode: str) -> None:
    web = HttpWebPages("campaign_web", allow_private_network=True, timeout=DEADLINE)
    with misbehaving_server(mode) as url:
        elapsed, error = timed(lambda: web.fetch_headlines(url + "/pricing"), FetchError)
    assert_stopped_at_the_deadline(elapsed, error, "competitor page")


def grafana(url: str) -> GrafanaApi:
    extra = {"datasource_uid": "prom-main", "timeout": DEADLINE}
    return GrafanaApi(
        "grafana_test",
        Connection(conn_id="grafana_test", conn_type="http", host=url, password="test-token", extra=json.dumps(extra)),
    )


@pytest.mark.parametrize("mode", MODES)
def test_a_production_client_through_http_api_stops_at_its_deadline(mode: str) -> None:
    dashboard = Dashboard(
        uid="spring-launch-r1",
        title="Spring launch",
        model=campaign_dashboard("spring-launch-r1", "Spring launch", "spring-launch", ["email"], ["campaign"]),
    )
    with misbehaving_server(mode, "application/json") as url:
        elapsed, error = timed(lambda: grafana(url).create_dashboard(dashboard), ServiceError)
    assert_stopped_at_the_deadline(elapsed, error, "Grafana")


def test_slack_over_urllib_stops_at_its_deadline() -> None:
    """slack_sdk sends with urllib (http.client): a client we cannot hand a transport, bounded all the same."""
    with misbehaving_server("headers", "application/json") as url:
        conn = Connection(
            conn_id="slack_test",
            conn_type="slack",
            password="xoxb-test-token",
            extra=json.dumps({"channel": "C0REVIEWS1", "base_url": url + "/api/", "timeout": DEADLINE}),
        )
        message = Message(key="spring-launch-r1-review", to=["dana"], subject="Review needed", text="Please review.")
        elapsed, error = timed(lambda: SlackNotifier("slack_test", conn).notify(message), ServiceError)
    assert_stopped_at_the_deadline(elapsed, error, "Slack")


def test_no_connection_is_opened_once_the_deadline_has_fired() -> None:
    """Time spent before the first connect (an SDK's first import, a slow DNS look-up) can use up the
    deadline before any socket exists for the watchdog to shut: a connect after it is refused."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        with pytest.raises(DeadlineExceeded, match="within 0.1 s"):
            with within(0.1, "Service", f"http://127.0.0.1:{port}"):
                time.sleep(0.3)
                socket.create_connection(("127.0.0.1", port), timeout=5)
        with pytest.raises(BlockingIOError):  # nothing ever knocked
            listener.accept()


def test_github_over_pygithub_stops_at_its_deadline() -> None:
    with misbehaving_server("body", "application/json") as url:
        conn = Connection(
            conn_id="campaign_review",
            conn_type="github",
            host=url + "/api/v3",
            password="test-token",
            extra=json.dumps({"repository": "acme/campaigns", "timeout": DEADLINE}),
        )
        elapsed, error = timed(
            lambda: GithubApi("campaign_review", conn).request("GET", "/repos/acme/campaigns", "read"), ServiceError
        )
    assert_stopped_at_the_deadline(elapsed, error, "github")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("operation", ["put", "get", "delete"])
def test_the_s3_asset_store_stops_at_its_deadline(mode: str, operation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """s3fs does its I/O on fsspec's own loop thread, out of the socket deadlines' sight: the store
    bounds each call through fsspec's sync timeout instead (botocore's retries included)."""
    from include.orchestrator.backends.assets import open_assets

    with misbehaving_server(mode, "application/xml") as url:
        extra = {
            "url": "s3://bucket/campaign-assets",
            "endpoint_url": url,
            "region_name": "us-east-1",
            "timeout": DEADLINE,
            "config_kwargs": {"connect_timeout": 30, "read_timeout": 30, "retries": {"max_attempts": 3}},
        }
        conn = {"conn_type": "aws", "login": "key", "password": "secret", "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_CAMPAIGN_ASSETS", json.dumps(conn))
        store = open_assets()
        target = store.url_of("launch-abc-image-email.png")
        call = {"put": lambda: store.put("launch-abc-image-email.png", b"png"), "get": lambda: store.get(target)}
        call["delete"] = lambda: store.delete(target)
        elapsed, error = timed(call[operation], DeadlineExceeded)
    assert_stopped_at_the_deadline(elapsed, error, "asset store 'campaign_assets'")


# --- class 7: cloud metadata and host-agent addresses -------------------------------------------------
# What the issue lists, each provider's documented endpoints (netguard.METADATA_* cite the docs).
LISTED_IPV4 = ["169.254.169.254", "168.63.129.16", "192.0.0.192", "100.100.100.200", "169.254.170.2", "169.254.170.23"]
LISTED_IPV6 = ["fd00:ec2::254", "fd00:ec2::23", "fd20:ce::254"]
LISTED_NAMES = ["metadata.google.internal", "metadata.goog", "instance-data.ec2.internal", "kubernetes.default.svc"]


def ipv4_spellings(address: str) -> list[str]:
    """The same IPv4 address as a URL host, in every form a client or resolver accepts."""
    ip = ipaddress.IPv4Address(address)
    high, low = int(ip) >> 16, int(ip) & 0xFFFF
    a, b, c, d = ip.packed
    return [
        address,
        f"{address}.",  # trailing dot
        str(int(ip)),  # one decimal number (inet_aton)
        hex(int(ip)),  # one hex number
        f"{a}.{b}.{(c << 8) | d}",  # a.b.c16
        f"[::ffff:{address}]",  # IPv4-mapped IPv6
        f"[::ffff:{high:x}:{low:x}]",  # the same, in hex groups
        f"[64:ff9b::{high:x}:{low:x}]",  # NAT64 well-known prefix (RFC 6052)
        f"[2002:{high:x}:{low:x}::1]",  # 6to4
        f"[::{address}]",  # IPv4-compatible (deprecated, still parsed)
    ]


def ipv6_spellings(address: str) -> list[str]:
    ip = ipaddress.IPv6Address(address)
    return [f"[{ip.compressed}]", f"[{ip.exploded}]", f"[{ip.exploded.upper()}]"]


CASES = (
    [(address, host) for address in LISTED_IPV4 for host in ipv4_spellings(address)]
    + [(address, host) for address in LISTED_IPV6 for host in ipv6_spellings(address)]
    + [(name, host) for name in LISTED_NAMES for host in (name, name.upper(), name + ".")]
)


def test_the_list_holds_every_listed_address_and_name() -> None:
    assert {ipaddress.ip_address(a) for a in LISTED_IPV4 + LISTED_IPV6} <= METADATA_ADDRESSES
    assert set(LISTED_NAMES) <= METADATA_HOSTNAMES


@pytest.mark.parametrize("allow_private", [False, True], ids=["public-only", "allow_private_network"])
@pytest.mark.parametrize(("listed", "host"), CASES, ids=[host for _, host in CASES])
def test_the_guard_refuses_every_metadata_address_in_every_spelling(listed: str, host: str, allow_private: bool) -> None:
    with pytest.raises(UnsafeURLError, match="cloud metadata") as refused:
        check_url(f"http://{host}/latest/meta-data/", allow_private)
    assert "allow_private_network" not in refused.value.reason  # refused outright, not as a private address


def test_the_page_fetch_refuses_azure_wireserver_before_connecting() -> None:
    web = HttpWebPages("campaign_web", allow_private_network=True, timeout=DEADLINE)
    elapsed, error = timed(lambda: web.fetch_headlines("http://168.63.129.16/machine?comp=goalstate"), UnsafeURLError)
    assert "168.63.129.16 is a cloud metadata address" in str(error) and elapsed < 1
