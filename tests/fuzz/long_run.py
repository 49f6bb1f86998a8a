"""The on-demand fuzz run: coverage-guided (atheris), a million inputs and more.

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python -m tests.fuzz.long_run -runs=1000000 [other libFuzzer flags]

One input is a ttrpc byte stream, cut into reads of fuzzed sizes: either the raw bytes as they
are, or one well-formed Request frame for a fuzzed contract method whose payload is the rest of
the input (so the decoders of every request type get most of the work). Each frame then goes
through what the server does before a handler runs, and through the pure conversions the
handlers make: the ttrpc.Request envelope, the method lookup, the payload decode with the
method's request type, the edge's NUL check (``agent.rpc.validate``), and the pb -> model
conversions (OCI spec, process, resources, storages, devices, interfaces, routes, neighbours,
CopyFile's argument checks). Anything raised there other than a decode error, a domain error
(``AgentError``), an RPC status (``RpcError``) or a spec error is a finding: libFuzzer stops,
writes the input to ``crash-*`` and exits non-zero. At the end the run prints
``fuzz: N inputs in S s, findings: F``.
"""

from __future__ import annotations

import sys
import time

import atheris

with atheris.instrument_imports():
    from google.protobuf.message import DecodeError

    from agent.errors import AgentError
    from agent.rpc import convert_network, convert_oci, framing
    from agent.rpc.dispatch import contract_methods
    from agent.rpc.handlers.storage import device_from_pb, storage_from_pb
    from agent.rpc.pb import request_pb2
    from agent.rpc.status import RpcError
    from agent.rpc.validate import check_request
    from agent.services.guest import CopyFileArgs, check_copy_args
    from oci.spec import SpecError

METHODS = [m for service in contract_methods().values() for m in service.values()]
EXPECTED = (DecodeError, AgentError, RpcError, SpecError)
_stats = {"inputs": 0, "runs": 0, "started": time.monotonic()}


def _convert(name: str, req: object) -> None:
    """The conversions the handler of ``name`` makes before it calls a service."""
    r: object = req
    if name == "CreateContainer" and r.HasField("OCI"):  # type: ignore[attr-defined]
        convert_oci.spec_from_pb(r.OCI)  # type: ignore[attr-defined]
    if name == "ExecProcess" and r.HasField("process"):  # type: ignore[attr-defined]
        convert_oci.process_from_pb(r.process)  # type: ignore[attr-defined]
    if name == "UpdateContainer" and r.HasField("resources"):  # type: ignore[attr-defined]
        convert_oci.resources_from_pb(r.resources)  # type: ignore[attr-defined]
    for s in getattr(r, "storages", ()):
        storage_from_pb(s)
    for d in getattr(r, "devices", ()):
        device_from_pb(d)
    if name == "UpdateInterface" and r.HasField("interface"):  # type: ignore[attr-defined]
        convert_network.interface_from_pb(r.interface)  # type: ignore[attr-defined]
    if name == "UpdateRoutes" and r.HasField("routes"):  # type: ignore[attr-defined]
        for i, route in enumerate(r.routes.Routes):  # type: ignore[attr-defined]
            convert_network.route_from_pb(route, i)
    if name == "AddARPNeighbors" and r.HasField("neighbors"):  # type: ignore[attr-defined]
        for i, n in enumerate(r.neighbors.ARPNeighbors):  # type: ignore[attr-defined]
            convert_network.neighbor_from_pb(n, i)
    if name == "CopyFile":
        c: object = r
        check_copy_args(
            CopyFileArgs(
                c.path,  # type: ignore[attr-defined]
                c.file_size,  # type: ignore[attr-defined]
                c.file_mode,  # type: ignore[attr-defined]
                c.dir_mode,  # type: ignore[attr-defined]
                c.uid,  # type: ignore[attr-defined]
                c.gid,  # type: ignore[attr-defined]
                c.offset,  # type: ignore[attr-defined]
                c.data,  # type: ignore[attr-defined]
            )
        )


def _serve_frame(frame: framing.Frame) -> None:
    if frame.type != framing.TYPE_REQUEST:
        return
    try:
        envelope = request_pb2.Request.FromString(frame.data)
    except DecodeError:
        return
    method = next(
        (m for m in METHODS if m.service == envelope.service and m.name == envelope.method), None
    )
    if method is None:
        return
    try:
        req = method.request_type.FromString(envelope.payload)
        check_request(req, envelope.payload)
        _convert(method.name, req)
    except EXPECTED:
        return


def test_one_input(data: bytes) -> None:
    _stats["inputs"] += 1
    if _stats["inputs"] == _stats["runs"]:
        _report()  # libFuzzer exits right after the last input, without Python's atexit
    fdp = atheris.FuzzedDataProvider(data)
    cuts = [fdp.ConsumeIntInRange(1, 4096) for _ in range(fdp.ConsumeIntInRange(0, 6))]
    if fdp.ConsumeBool():
        method = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
        payload = fdp.ConsumeBytes(fdp.remaining_bytes())
        body = request_pb2.Request(
            service=method.service, method=method.name, payload=payload
        ).SerializeToString()
        stream = framing.encode(fdp.ConsumeIntInRange(0, 7) * 2 + 1, framing.TYPE_REQUEST, body)
    else:
        stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    parser = framing.FrameParser()
    pos = 0
    for n in [*cuts, len(stream)]:
        chunk = stream[pos : pos + n]
        if not chunk:
            break
        for event in parser.feed(chunk):
            if isinstance(event, framing.Frame):
                _serve_frame(event)
        pos += n


def _report() -> None:
    seconds = time.monotonic() - _stats["started"]
    print(f"fuzz: {_stats['inputs']} inputs in {seconds:.0f} s, findings: 0", flush=True)


def main(argv: list[str]) -> None:
    for arg in argv:
        if arg.startswith("-runs="):
            _stats["runs"] = int(arg.split("=", 1)[1])
    atheris.instrument_all()  # the agent's modules and what they call: coverage for guidance
    atheris.Setup([sys.argv[0], *argv], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
