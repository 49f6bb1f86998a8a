"""pb → OCI spec conversion (agent.rpc.convert_oci) on any grpc.Spec: it either converts, and
the result validates without an exception and serializes to JSON that decodes back to the same
spec, or it is refused with a domain or spec error; the RPC edge's NUL check never raises
anything else."""

from __future__ import annotations

from hypothesis import given

from agent.errors import AgentError
from agent.rpc.convert_oci import spec_from_pb
from agent.rpc.pb import agent_pb2, oci_pb2
from agent.rpc.validate import check_request
from oci import spec as ocispec
from tests.fuzz.strategies import messages


@given(messages(oci_pb2.Spec.DESCRIPTOR))
def test_any_spec_converts_or_is_refused(pb: oci_pb2.Spec) -> None:
    req = agent_pb2.CreateContainerRequest(container_id="c", OCI=pb)
    try:
        check_request(req, req.SerializeToString())
    except AgentError:
        return
    try:
        spec = spec_from_pb(pb)
    except (AgentError, ocispec.SpecError):
        return
    problems = ocispec.validate(spec)  # problems are data, never an exception
    if any(p.severity == "error" for p in problems):
        return
    text = spec.to_json()
    assert ocispec.loads(text) == spec
