"""Every AgentService method's request decoding and handling, with any request hypothesis can
build, against a real agent (the test agent: fake clock, CPU/memory hot-plug and entropy on temp
files; in its own mount, network, UTS and IPC namespaces) over one long-lived connection, as the
shim keeps one: every call is answered on its stream with a status the contract knows, an OK
answer decodes as the method's response type, no answer is an unexpected exception (the text
``agent.rpc.status`` gives those) and the agent is alive and serving at the end.

Not fuzzed live: DestroySandbox (ends the agent), CreateContainer (a random spec could run
a random program of this machine; its conversion is fuzzed in test_spec_conversion) and the test
agent's own GetDiagnosticData. Storages in a request never name a /dev source or driver options
(a random one could format or re-own a disk of this machine)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.rpc import framing
from agent.rpc.dispatch import AGENT_SERVICE, service_methods
from agent.rpc.pb import agent_pb2, request_pb2
from agent.rpc.status import Code
from tests.conftest import can_unshare_mount_ns
from tests.fuzz.strategies import messages
from tests.support.agent import AgentProcess

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(not can_unshare_mount_ns(), reason="needs CAP_SYS_ADMIN (namespaces)"),
]

NAMESPACES = ["unshare", "--mount", "--propagation", "private", "--net", "--uts", "--ipc"]
EXCLUDED = {"DestroySandbox", "CreateContainer", "GetDiagnosticData"}
METHODS = {n: m for n, m in service_methods(AGENT_SERVICE).items() if n not in EXCLUDED}


class Conn:
    """A blocking ttrpc connection: one call at a time, as a minimal shim."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(path)
        self.sid = 1

    def call(self, method: str, payload: bytes) -> request_pb2.Response:
        self.sid += 2
        body = request_pb2.Request(
            service=AGENT_SERVICE, method=method, payload=payload, timeout_nano=5_000_000_000
        ).SerializeToString()
        self.sock.sendall(framing.encode(self.sid, framing.TYPE_REQUEST, body))
        header = self._exactly(framing.HEADER_SIZE)
        length, sid, typ, _ = framing.HEADER.unpack(header)
        data = self._exactly(length)
        assert (sid, typ) == (self.sid, framing.TYPE_RESPONSE)
        return request_pb2.Response.FromString(data)

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk, "the agent closed the connection"
            out += chunk
        return out


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Conn]]:
    from tests.support.agent import remove_workdir, start_agent

    hw = tmp_path_factory.mktemp("hw")
    cpu = hw / "sys" / "devices" / "system" / "cpu"
    (cpu / "cpu0").mkdir(parents=True)
    (cpu / "online").write_text("0\n")
    (cpu / "possible").write_text("0-1\n")
    (hw / "sys" / "devices" / "system" / "memory").mkdir(parents=True)
    (hw / "sys" / "devices" / "system" / "memory" / "probe").write_text("")
    (hw / "random").write_bytes(b"")
    agent = start_agent(
        prefix=NAMESPACES,
        test_servicer=True,
        args=["--hotplug-timeout", "1"],
        env={"KATA_TEST_FAKE_HW": str(hw)},
    )
    try:
        assert agent.socket_path is not None
        yield agent, Conn(str(agent.socket_path))
    finally:
        agent.stop()
        remove_workdir(agent.workdir)


def _defused(req: Message) -> Message:
    for storage in getattr(req, "storages", ()):
        if storage.source.startswith("/dev"):
            storage.source = "fuzz"
        del storage.driver_options[:]
    return req


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, Message]:
    name = draw(st.sampled_from(sorted(METHODS)))
    req = draw(messages(METHODS[name].request_type.DESCRIPTOR))
    return name, _defused(req)


@settings(max_examples=1500)
@given(calls())
def test_any_request_is_answered_properly(
    live: tuple[AgentProcess, Conn], call: tuple[str, Message]
) -> None:
    agent, conn = live
    name, req = call
    resp = conn.call(name, req.SerializeToString())
    code = resp.status.code
    assert code in Code.__members__.values(), code
    assert "internal error:" not in resp.status.message, (name, req, resp.status.message)
    if code == Code.OK:
        METHODS[name].response_type.FromString(resp.payload)
    assert agent.alive()


def test_agent_still_serving_and_logged_no_unexpected_error(
    live: tuple[AgentProcess, Conn],
) -> None:
    agent, conn = live
    resp = conn.call("GetGuestDetails", agent_pb2.GuestDetailsRequest().SerializeToString())
    assert resp.status.code == Code.OK
    assert not [r for r in agent.logs() if r.get("msg") == "unexpected error in handler"]
