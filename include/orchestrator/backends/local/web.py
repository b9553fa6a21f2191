"""Web port, local backend: fetch a competitor page over HTTP and keep its title and headlines.

URLs come from campaign files and trigger conf, redirect targets from the pages themselves: all
untrusted. Redirects are followed by hand so that every hop is checked by
:mod:`include.orchestrator.resilience.netguard` before its request, and the guarded transport checks the
address again at connect time (DNS rebinding). Bodies are read up to ``max_bytes``, and the whole
fetch (every hop: connect, headers and body) has one total deadline, ``timeout`` (see
:mod:`include.orchestrator.resilience.deadlines`). Scraped text is data: it comes back as short
plain strings, never evaluated or rendered.

Errors say whether a retry can help: :class:`~include.orchestrator.errors.UnsafeURLError`
never (the URL is refused), :class:`FetchError` by its type, retryable or permanent (429, 5xx,
timeouts and connection failures are; other 4xx, non-HTML pages and redirect loops are not).
"""

from __future__ import annotations

import re

import httpx
from selectolax.lexbor import LexborHTMLParser

from include.orchestrator.backends.common.http_api import is_retryable_status, retry_after_seconds
from include.orchestrator.domain.ports import PageHeadlines
from include.orchestrator.errors import DeadlineExceeded, FetchError, PermanentFetchError, RetryableFetchError, UnsafeURLError
from include.orchestrator.resilience.deadlines import Deadline, within
from include.orchestrator.resilience.netguard import check_url, guarded_transport

MAX_REDIRECTS = 5
MAX_HEADLINES = 30
MAX_CHARS = 200
SERVICE = "competitor page"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Control characters and bidi overrides: invisible in text, able to disguise what it says.
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _clean(text: str) -> str:
    return " ".join(_INVISIBLE.sub(" ", text).split())[:MAX_CHARS].rstrip()


def extract_headlines(body: bytes, charset: str | None = None) -> tuple[str, list[str]]:
    """The page title and its h1-h3 texts in document order (normalised, deduplicated, bounded)."""
    try:
        html: str | bytes = body.decode(charset, errors="replace") if charset else body
    except LookupError:  # an unknown charset label from the server: let the parser detect it
        html = body
    # scripting=True keeps <noscript> as text, so a <noscript> in <head> cannot push <title> out.
    tree = LexborHTMLParser(html, encoding=isinstance(html, bytes), scripting=True)
    tree.strip_tags(["script", "style", "template"])
    for br in tree.css("br"):
        br.replace_with(" ")  # "Faster<br>pipelines" is two words
    title_node = tree.css_first("head title")
    headlines: dict[str, str] = {}  # casefolded -> first spelling seen
    for node in tree.css("h1, h2, h3"):  # lexbor returns matches in document order
        text = _clean(node.text(deep=True))
        if text:
            headlines.setdefault(text.casefold(), text)
        if len(headlines) == MAX_HEADLINES:
            break
    return (_clean(title_node.text(deep=True)) if title_node else ""), list(headlines.values())


class HttpWebPages:
    """:class:`~include.orchestrator.domain.ports.WebPort` over direct HTTP(S) requests."""

    def __init__(
        self,
        conn_id: str,
        allow_private_network: bool = False,
        timeout: float = 10.0,
        max_bytes: int = 2_000_000,
        user_agent: str = "campaign-orchestrator/0.1 (+research)",
    ) -> None:
        self.conn_id = conn_id
        self.allow_private_network = allow_private_network
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.headers = {
            "User-Agent": user_agent,
            "Accept": "text/html,application/xhtml+xml;q=0.9",
            "Accept-Encoding": "identity",  # so max_bytes bounds memory, not a compressed bomb
        }

    def fetch_headlines(self, url: str) -> PageHeadlines:
        # trust_env=False: no proxies or .netrc credentials from the environment.
        try:
            with (
                within(self.timeout, SERVICE, url) as deadline,
                httpx.Client(
                    transport=guarded_transport(self.allow_private_network),
                    timeout=self.timeout,
                    headers=self.headers,
                    follow_redirects=False,
                    trust_env=False,
                ) as client,
            ):
                final_url, status, body, charset = self._get(client, url, deadline)
        except DeadlineExceeded as exc:
            raise RetryableFetchError(deadline.url, str(exc)) from None
        title, headlines = extract_headlines(body, charset)
        return PageHeadlines(url=url, final_url=final_url, status=status, title=title, headlines=headlines)

    def _get(self, client: httpx.Client, url: str, deadline: Deadline) -> tuple[str, int, bytes, str | None]:
        current, status = url, 0
        for hop in range(MAX_REDIRECTS + 1):
            via = f" (reached by redirect from {url!r})" if hop else ""
            deadline.url = current  # the host a deadline error names
            try:
                check_url(current, self.allow_private_network)
                with client.stream("GET", current) as response:
                    status, location = response.status_code, response.headers.get("location")
                    if status in REDIRECT_STATUSES and location:
                        current = str(response.url.join(location))
                        continue
                    self._check_response(current, response)
                    return str(response.url), status, self._read(response), response.charset_encoding
            except UnsafeURLError as exc:  # from check_url or from the guard at connect time
                raise UnsafeURLError(current, exc.reason + via) from None
            except httpx.TimeoutException as exc:
                raise RetryableFetchError(current, f"timed out ({type(exc).__name__}){via}") from exc
            except httpx.TransportError as exc:
                raise RetryableFetchError(current, f"connection failed ({type(exc).__name__}: {exc}){via}") from exc
        raise PermanentFetchError(url, f"more than {MAX_REDIRECTS} redirects (last: {current!r})", status)

    @staticmethod
    def _check_response(url: str, response: httpx.Response) -> None:
        status = response.status_code
        if status >= 400:
            raise FetchError.of(
                url,
                f"HTTP {status} {response.reason_phrase}",
                status,
                retryable=is_retryable_status(status),
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
            )
        if not 200 <= status < 300:
            raise PermanentFetchError(url, f"unexpected HTTP {status} {response.reason_phrase}", status)
        content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in HTML_TYPES:
            raise PermanentFetchError(url, f"not an HTML page (content-type {content_type or 'missing'!r})", status)

    def _read(self, response: httpx.Response) -> bytes:
        """The body up to ``max_bytes``; the rest is never read (the fetch's deadline bounds the time)."""
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) >= self.max_bytes:
                return bytes(body[: self.max_bytes])
        return bytes(body)
