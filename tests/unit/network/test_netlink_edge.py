"""The OS→domain edge of the netlink adapter: errno → domain error with the step named, and the
translation of kernel route messages to and from the model (no socket involved)."""

from __future__ import annotations

import errno
import ipaddress

import pytest

from agent.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from agent.network import netlink
from agent.network.model import KernelRoute


class FakeNetlinkError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@pytest.mark.parametrize(
    ("code", "cls", "text"),
    [
        (errno.ENODEV, NotFound, "No such device (ENODEV)"),
        (errno.EEXIST, AlreadyExists, "File exists (EEXIST)"),
        (errno.EINVAL, InvalidArgument, "Invalid argument (EINVAL)"),
        (errno.ENETUNREACH, FailedPrecondition, "Network is unreachable (ENETUNREACH)"),
        (errno.EPERM, PermissionDenied, "Operation not permitted (EPERM)"),
        (errno.EMSGSIZE, Internal, "(EMSGSIZE)"),
    ],
)
def test_errno_to_domain_error(code: int, cls: type, text: str) -> None:
    err = netlink.to_agent_error("add route 10.0.0.0/8 dev eth0", FakeNetlinkError(code))
    assert type(err) is cls
    assert str(err).startswith("add route 10.0.0.0/8 dev eth0: ")
    assert text in str(err)


def test_route_message_round_trip() -> None:
    msg = {
        "family": 10,
        "dst_len": 64,
        "src_len": 0,
        "tos": 0,
        "table": 254,
        "proto": 3,
        "scope": 0,
        "type": 1,
        "flags": 0x4 | 0x10,  # onlink + linkdown (state, dropped)
        "attrs": {
            "RTA_TABLE": 254,
            "RTA_DST": "fd09::",
            "RTA_GATEWAY": "fd00::1",
            "RTA_OIF": 2,
            "RTA_PRIORITY": 1024,
        },
    }

    class Msg(dict):  # type: ignore[type-arg]
        def get(self, key: str, default: object = None) -> object:
            attrs = dict.__getitem__(self, "attrs")
            if key in attrs:
                return attrs[key]
            return dict.get(self, key, default)

    route = netlink._route(Msg(msg))
    assert route == KernelRoute(
        family=6,
        table=254,
        dst=ipaddress.ip_network("fd09::/64"),
        oif=2,
        gateway=ipaddress.ip_address("fd00::1"),
        proto=3,
        flags=0x4,
        priority=1024,
    )
    kwarg = netlink._route_kwarg(route)
    assert kwarg["dst"] == "fd09::"
    assert kwarg["dst_len"] == 64
    assert kwarg["gateway"] == "fd00::1"
    assert kwarg["priority"] == 1024
    assert kwarg["flags"] == 0x4
    assert "metrics" not in kwarg
    with_mtu = netlink._route_kwarg(
        KernelRoute(family=4, table=254, dst=None, oif=2, mtu=1400, proto=3)
    )
    assert with_mtu["metrics"] == {"mtu": 1400}
    assert with_mtu["dst_len"] == 0
    assert "dst" not in with_mtu
