"""SSRF protection for URLs that come from users or from scraped pages (both untrusted).

Two layers, both needed:

* :func:`check_url` validates a URL before any request: http/https only, no ``user:pass@``,
  the host is not a well-known cloud-metadata name, and EVERY address it resolves to is allowed.
  It gives the clear, early error message. It parses with ``httpx.URL``, the same parser the
  client uses, so the guard and the client cannot disagree about which host a URL names.
* :func:`guarded_transport` closes the DNS-rebinding gap a pre-check alone leaves open (the name
  could resolve to a public address for the check and to ``127.0.0.1`` a moment later, when the
  client resolves it again to connect). Its httpcore network backend resolves the host ONCE at
  connect time, checks every address, and then connects to those checked IP literals itself; the
  HTTP ``Host`` header and the TLS SNI/certificate check still use the hostname, because httpcore
  passes ``server_hostname`` separately from the address it connects to. So the address checked
  is, by construction, the address connected to, for the first request and for every redirect
  hop and pooled connection alike. Proxies from the environment are ignored (``trust_env``
  off): through a proxy the guard would only ever see the proxy's address.

``allow_private=True`` (local development, demo sites on loopback) lets loopback, RFC 1918,
unique-local and CGNAT addresses through; link-local, multicast, unspecified and reserved
addresses, and every cloud metadata or host-agent name and address in :data:`METADATA_HOSTNAMES`
and :data:`METADATA_ADDRESSES` (the one list of them, with sources), stay refused whatever the flag
says. Names are resolved before they are checked, so other spellings of an address (decimal
``2852039166``, hex ``0xa9fea9fe``, a trailing dot) meet the same list.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from include.orchestrator.errors import UnsafeURLError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata and host-agent endpoints: refused whatever allow_private_network says, by name and by
# address (also inside IPv4-mapped, IPv4-compatible, 6to4 and NAT64 IPv6 forms, see _embedded_ipv4).
# The one list of them; each entry cites the provider's documentation.
METADATA_HOSTNAMES = frozenset(
    {
        # GCP: https://cloud.google.com/compute/docs/metadata/querying-metadata
        "metadata.google.internal",
        "metadata.goog",
        "metadata",  # the short name GCP's resolver answers inside a VM
        # AWS EC2: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html
        "instance-data",
        "instance-data.ec2.internal",
        # Tencent Cloud: https://www.tencentcloud.com/document/product/213/4934
        "metadata.tencentyun.com",
        # Kubernetes: the API server as every pod can name it (its ClusterIP differs per cluster, so only
        # the names are known here): https://kubernetes.io/docs/tasks/run-application/access-api-from-pod/
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        # AWS IMDS https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html;
        # GCP https://cloud.google.com/compute/docs/metadata/querying-metadata;
        # Azure IMDS https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service;
        # Oracle https://docs.oracle.com/iaas/Content/Compute/Tasks/gettingmetadata.htm;
        # DigitalOcean https://docs.digitalocean.com/reference/api/metadata/;
        # Hetzner https://docs.hetzner.cloud/reference/cloud#server-metadata;
        # OpenStack https://docs.openstack.org/nova/latest/user/metadata.html
        "169.254.169.254",
        "fd00:ec2::254",  # AWS IMDS over IPv6 (Nitro), same AWS page
        "fd20:ce::254",  # GCP metadata server over IPv6, same GCP page
        # Azure WireServer and host agent, a public address (so only this list refuses it):
        # https://learn.microsoft.com/azure/virtual-network/what-is-ip-address-168-63-129-16
        "168.63.129.16",
        "192.0.0.192",  # Oracle Cloud IMDS (second address), same Oracle page
        "100.100.100.200",  # Alibaba Cloud ECS: https://www.alibabacloud.com/help/ecs/user-guide/view-instance-metadata
        "169.254.0.23",  # Tencent Cloud (metadata.tencentyun.com), same Tencent page
        # AWS ECS task metadata and credentials: https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-iam-roles.html
        "169.254.170.2",
        # EKS Pod Identity agent: https://docs.aws.amazon.com/eks/latest/userguide/pod-id-agent-setup.html
        "169.254.170.23",
        "fd00:ec2::23",
    )
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # connecting to 0.x reaches this host on Linux
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, 6to4, NAT64, IPv4-compatible), if any."""
    for embedded in (ip.ipv4_mapped, ip.sixtofour):
        if embedded is not None:
            return embedded
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(ip: IPAddress, allow_private: bool) -> str | None:
    """Why ``ip`` may not be connected to (e.g. ``"link-local"``), or None if it may."""
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(ip)) is not None:
        reason = refusal(v4, allow_private)
        return f"{reason} (IPv4 {v4} embedded in IPv6)" if reason else None
    # Refused whatever allow_private says: metadata must never be reachable.
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for kind in ("link_local", "multicast", "unspecified", "site_local"):
        if getattr(ip, f"is_{kind}", False):
            return kind.replace("_", "-")
    if ip in _THIS_NETWORK:
        return "'this network' (0.0.0.0/8)"
    if ip.is_reserved and not ip.is_loopback:  # IPv6 ::/8 is "reserved" and holds ::1
        return "reserved"
    # Refused unless the connection allows the private network.
    if ip.is_global or allow_private:
        return None
    kind = "loopback" if ip.is_loopback else "shared CGNAT" if ip in _CGNAT else "private" if ip.is_private else "not public"
    return f"{kind}, refused unless the connection sets allow_private_network"


def resolve_checked(host: str, port: int, allow_private: bool) -> list[str]:
    """Resolve ``host`` once and return its addresses, refusing if ANY of them is not allowed.

    Raises :class:`UnsafeURLError` naming ``host:port``; callers that know the URL re-raise it.
    """
    where = f"{host}:{port}"
    name = host.rstrip(".").lower()
    if not name:
        raise UnsafeURLError(where, "no host")
    if name in METADATA_HOSTNAMES:
        raise UnsafeURLError(where, f"{host!r} is a cloud metadata hostname")
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURLError(where, f"host {host!r} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))  # an IPv4/IPv6 sockaddr's host is a str
    if not addresses:
        raise UnsafeURLError(where, f"host {host!r} does not resolve")
    for address in addresses:
        # Drop an IPv6 zone id ("fe80::1%eth0") before parsing.
        if reason := refusal(ipaddress.ip_address(address.split("%", 1)[0]), allow_private):
            what = f"{address} is" if address == name else f"host {host!r} resolves to {address}:"
            raise UnsafeURLError(where, f"{what} {reason}")
    return addresses


def check_url(url: str, allow_private: bool) -> None:
    """Raise :class:`UnsafeURLError` unless ``url`` is safe to fetch (see the module docstring)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UnsafeURLError(str(url), f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURLError(url, f"scheme {parsed.scheme or '(none)'!r} is not http or https")
    if parsed.userinfo:
        raise UnsafeURLError(url, "credentials (user:pass@) in URLs are not allowed")
    host = parsed.raw_host.decode("ascii")
    try:
        resolve_checked(host, parsed.port or (443 if parsed.scheme == "https" else 80), allow_private)
    except UnsafeURLError as exc:
        raise UnsafeURLError(url, exc.reason) from None


class GuardedNetworkBackend(httpcore.NetworkBackend):
    """httpcore network backend that connects only to addresses it has just checked."""

    def __init__(self, allow_private: bool, inner: httpcore.NetworkBackend | None = None) -> None:
        self.allow_private = allow_private
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        error: Exception | None = None
        # Try each checked address in turn, as socket.create_connection would.
        for address in resolve_checked(host, port, self.allow_private):
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None  # resolve_checked never returns an empty list
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise UnsafeURLError(path, "unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def guarded_transport(allow_private: bool) -> httpx.HTTPTransport:
    """An httpx transport whose every connection goes through :class:`GuardedNetworkBackend`."""
    ssl_context = httpx.create_ssl_context(trust_env=False)
    transport = httpx.HTTPTransport(verify=ssl_context, trust_env=False)
    # httpx 0.28 has no network_backend argument; its transport delegates all I/O to `_pool`,
    # so swap in a pool built the same way but with the guarded backend (the tests pin this).
    transport._pool = httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=GuardedNetworkBackend(allow_private))
    return transport
