"""agent.rpc.transport address parsing and grpc target mapping."""

from __future__ import annotations

import pytest

from agent.rpc.grpc_server import grpc_target
from agent.rpc.transport import VMADDR_CID_ANY, parse_address


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("unix:///run/x.sock", ("unix", "/run/x.sock")),
        ("unix://@kata-agent", ("unix", "\0kata-agent")),
        ("vsock://-1:1024", ("vsock", (VMADDR_CID_ANY, 1024))),
        ("vsock://3:1025", ("vsock", (3, 1025))),
        (
            "serial:///dev/virtio-ports/agent.channel.0",
            ("serial", "/dev/virtio-ports/agent.channel.0"),
        ),
    ],
)
def test_parse_address(address: str, expected: tuple[str, object]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["tcp://1.2.3.4:5", "unix://relative", "/run/x.sock"])
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        parse_address(address)


def test_grpc_targets() -> None:
    assert grpc_target("unix:///run/g.sock") == "unix:/run/g.sock"
    assert grpc_target("unix://@g") == "unix-abstract:g"
    assert grpc_target("unix-abstract:g") == "unix-abstract:g"
    with pytest.raises(ValueError, match="expected unix"):
        grpc_target("tcp://x:1")
