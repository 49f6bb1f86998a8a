"""The network model: what the shim asks for and what the kernel holds, as frozen dataclasses.

These are the agent's own types (the RPC layer converts `types.Interface`/`Route`/`ARPNeighbor`
to and from them). Parsing of the wire's strings happens here, in pure functions that raise
`agent.errors.InvalidArgument` naming the field and the value, so that a malformed request is
rejected before anything is changed.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from agent.errors import InvalidArgument

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

# Kernel constants used by the model (linux/if.h, linux/rtnetlink.h, linux/neighbour.h).
IFF_UP = 0x1
IFF_NOARP = 0x80
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RTNH_F_ONLINK = 0x4
NUD_PERMANENT = 0x80
IFNAMSIZ = 16

_MAC_RE = re.compile(r"^[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}$")


def parse_mac(value: str, what: str) -> str:
    """`value` as a canonical lowercase `aa:bb:cc:dd:ee:ff`; `what` names the field in errors."""
    if not _MAC_RE.match(value):
        raise InvalidArgument(f"{what}: invalid MAC address {value!r}")
    return ":".join(f"{int(part, 16):02x}" for part in value.split(":"))


def parse_ip(value: str, what: str) -> IPAddr:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise InvalidArgument(f"{what}: invalid IP address {value!r}") from None


def parse_prefix_len(mask: str, family: int, what: str) -> int:
    """The prefix length of a `mask` string: decimal ("24"), a dotted IPv4 netmask, or empty
    (a host address: 32 or 128)."""
    bits = 32 if family == 4 else 128
    text = mask.strip()
    if not text:
        return bits
    if text.isdigit():
        n = int(text)
        if n > bits:
            raise InvalidArgument(f"{what}: prefix length {text} out of range 0-{bits}")
        return n
    if family == 4:
        try:
            return ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen
        except ValueError:
            pass
    raise InvalidArgument(f"{what}: invalid mask {mask!r} (expected a prefix length 0-{bits})")


def parse_network(value: str, what: str) -> IPNet:
    """A destination or source prefix `a.b.c.d/N`; a bare address is a host prefix. Host bits
    must be zero (the kernel rejects them)."""
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as err:
        raise InvalidArgument(f"{what}: invalid prefix {value!r} ({err})") from None


def check_link_name(name: str, what: str) -> None:
    """Reject a name the kernel would refuse (dev_valid_name)."""
    if (
        not name
        or len(name.encode()) >= IFNAMSIZ
        or name in (".", "..")
        or any(c == "/" or c == ":" or c.isspace() for c in name)
    ):
        raise InvalidArgument(
            f"{what}: invalid interface name {name!r} (1-15 bytes, no '/', ':' or whitespace)"
        )


@dataclass(frozen=True, slots=True)
class IPAddress:
    """An address with its prefix length (an interface address or a neighbour's address)."""

    address: IPAddr
    prefix_len: int

    @property
    def family(self) -> int:
        return self.address.version

    @property
    def network(self) -> IPNet:
        return ipaddress.ip_network(f"{self.address}/{self.prefix_len}", strict=False)

    def __str__(self) -> str:
        return f"{self.address}/{self.prefix_len}"

    @classmethod
    def parse(cls, address: str, mask: str, what: str) -> IPAddress:
        ip = parse_ip(address, what)
        return cls(ip, parse_prefix_len(mask, ip.version, what))


@dataclass(frozen=True, slots=True)
class Interface:
    """A NIC as requested by UpdateInterface, or as the kernel has it (ListInterfaces).

    `hw_addr` is canonical lowercase or ""; `mtu` 0 and `name` "" mean "leave as is" in a
    request. `raw_flags` carries IFF_* bits (only IFF_NOARP is read from a request).
    `device`, `device_path` and `type` are the shim's own bookkeeping, echoed back.
    """

    name: str = ""
    hw_addr: str = ""
    addresses: tuple[IPAddress, ...] = ()
    mtu: int = 0
    raw_flags: int = 0
    device: str = ""
    device_path: str = ""
    type: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    """A main-table route.

    `dest` None is a default route. `source` is a source prefix (RTA_SRC) when the request gave
    a prefix length, `prefsrc` the preferred source (RTA_PREFSRC) when it gave a bare address.
    `flags` are RTNH_F_* next-hop flags (RTNH_F_ONLINK), `mtu` the RTAX_MTU metric (0: none).
    """

    family: int
    device: str
    dest: IPNet | None = None
    gateway: IPAddr | None = None
    source: IPNet | None = None
    prefsrc: IPAddr | None = None
    scope: int = RT_SCOPE_UNIVERSE
    flags: int = 0
    mtu: int = 0

    def describe(self) -> str:
        parts = [str(self.dest) if self.dest is not None else "default"]
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        parts.append(f"dev {self.device}")
        if self.source is not None:
            parts.append(f"from {self.source}")
        if self.prefsrc is not None:
            parts.append(f"src {self.prefsrc}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class ARPNeighbor:
    """A neighbour entry; `state` 0 in a request means NUD_PERMANENT."""

    address: IPAddr
    device: str
    lladdr: str = ""
    state: int = NUD_PERMANENT
    flags: int = 0

    def describe(self) -> str:
        return f"{self.address} lladdr {self.lladdr or '-'} dev {self.device}"


# ---- kernel-side views, as the netlink adapter reports them ----------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    mac: str
    mtu: int
    flags: int
    min_mtu: int = 0
    max_mtu: int = 0

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


@dataclass(frozen=True, slots=True)
class LinkAddress:
    index: int
    address: IPAddress


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """One route message of the kernel, with the identity fields needed to delete or restore it."""

    family: int
    table: int
    dst: IPNet | None
    oif: int | None
    gateway: IPAddr | None = None
    src: IPNet | None = None
    prefsrc: IPAddr | None = None
    scope: int = RT_SCOPE_UNIVERSE
    proto: int = 0
    type: int = RTN_UNICAST
    flags: int = 0
    mtu: int = 0
    priority: int = 0
    tos: int = 0
