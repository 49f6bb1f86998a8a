"""kata-agent-hv's pure parts: sandbox ids, the VM size from the runtime's annotations, the
hypervisor.proto messages as Kata's remote hypervisor sends them."""

from __future__ import annotations

import pytest

from agent.errors import InvalidArgument
from agent.rpc.pb import hypervisor_pb2
from hv.config import MEMORY_ANNOTATION, VCPUS_ANNOTATION, VmSize, check_sandbox_id, vm_size

DEFAULT = VmSize(cpus=1, memory_mb=512)


@pytest.mark.parametrize(
    ("annotations", "size"),
    [
        ({}, DEFAULT),
        ({VCPUS_ANNOTATION: "2", MEMORY_ANNOTATION: "2048"}, VmSize(2, 2048)),
        ({VCPUS_ANNOTATION: "0", MEMORY_ANNOTATION: "0"}, DEFAULT),  # Kata: 0 means the default
        ({VCPUS_ANNOTATION: " 3 ", MEMORY_ANNOTATION: ""}, VmSize(3, 512)),
        ({MEMORY_ANNOTATION: "64"}, VmSize(1, 256)),  # one small container's limit: the minimum
        ({"io.katacontainers.config.hypervisor.machine_type": "q35"}, DEFAULT),
    ],
)
def test_vm_size_from_annotations(annotations: dict[str, str], size: VmSize) -> None:
    assert vm_size(annotations, DEFAULT, host_memory_mb=8192) == size


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({VCPUS_ANNOTATION: "two"}, r"default_vcpus='two': not a whole number"),
        ({VCPUS_ANNOTATION: "1.5"}, r"default_vcpus='1.5': not a whole number"),
        ({VCPUS_ANNOTATION: "-1"}, r"default_vcpus=-1: must not be negative"),
        ({VCPUS_ANNOTATION: "4096"}, r"default_vcpus=4096: at most 255 vCPUs"),
        ({MEMORY_ANNOTATION: "99999"}, r"default_memory=99999: more than the host's 8192 MiB"),
    ],
)
def test_bad_vm_size_is_refused_naming_the_annotation(
    annotations: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        vm_size(annotations, DEFAULT, host_memory_mb=8192)


@pytest.mark.parametrize("good", ["a1", "0123456789abcdef" * 4, "pod.sandbox-1_x"])
def test_sandbox_ids_kata_accepts(good: str) -> None:
    assert check_sandbox_id(good) == good


@pytest.mark.parametrize("bad", ["", "a", "../etc", "a/b", "-x", ".hidden", "x" * 65, "a b"])
def test_sandbox_ids_that_could_escape_the_state_dir_are_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="sandbox id"):
        check_sandbox_id(bad)


def test_hypervisor_messages_match_kata_remote_hypervisor() -> None:
    """Field names and numbers of Kata's hypervisor.proto (src/runtime/protocols/hypervisor)."""
    fields = {
        name: [(f.name, f.number) for f in msg.fields]
        for name, msg in hypervisor_pb2.DESCRIPTOR.message_types_by_name.items()
    }
    assert fields == {
        "VersionRequest": [("version", 1)],
        "VersionResponse": [("version", 1)],
        "CreateVMRequest": [("id", 1), ("annotations", 2), ("networkNamespacePath", 3)],
        "CreateVMResponse": [("agentSocketPath", 1)],
        "StartVMRequest": [("id", 1)],
        "StartVMResponse": [],
        "StopVMRequest": [("id", 1)],
        "StopVMResponse": [],
    }
    service = hypervisor_pb2.DESCRIPTOR.services_by_name["Hypervisor"]
    assert service.full_name == "hypervisor.Hypervisor"
    assert [(m.name, m.input_type.name, m.output_type.name) for m in service.methods] == [
        ("CreateVM", "CreateVMRequest", "CreateVMResponse"),
        ("StartVM", "StartVMRequest", "StartVMResponse"),
        ("StopVM", "StopVMRequest", "StopVMResponse"),
        ("Version", "VersionRequest", "VersionResponse"),
    ]
    annotations = hypervisor_pb2.CreateVMRequest.DESCRIPTOR.fields_by_name["annotations"]
    assert annotations.message_type is not None
    assert annotations.message_type.GetOptions().map_entry


def test_the_sample_kata_configuration_has_what_the_remote_hypervisor_needs() -> None:
    import tomllib
    from pathlib import Path

    import hv

    text = (Path(hv.__file__).parent / "configuration-remote.toml").read_text()
    config = tomllib.loads(text)
    remote = config["hypervisor"]["remote"]
    assert remote["remote_hypervisor_socket"] == "/run/kata-agent-hv/hypervisor.sock"
    assert remote["remote_hypervisor_timeout"] >= 60
    assert {"default_vcpus", "default_memory"} <= set(remote["enable_annotations"])
    assert config["agent"]["kata"]["dial_timeout"] > 0
    runtime = config["runtime"]
    assert runtime["internetworking_model"] == "none"
    assert runtime["disable_new_netns"] is True
    assert runtime["static_sandbox_resource_mgmt"] is True
    assert list(config) == ["hypervisor", "agent", "runtime"]
    assert list(config["hypervisor"]) == ["remote"]


def test_a_dispatcher_serves_the_hypervisor_service_alone() -> None:
    from agent.rpc.dispatch import AGENT_SERVICE, HYPERVISOR_SERVICE, Dispatcher
    from agent.rpc.status import Code, RpcError

    dispatcher = Dispatcher({HYPERVISOR_SERVICE: object()}, services=(HYPERVISOR_SERVICE,))
    assert {b.method.name for b in dispatcher.bound_methods()} == {
        "CreateVM",
        "StartVM",
        "StopVM",
        "Version",
    }
    with pytest.raises(RpcError) as err:
        dispatcher.lookup(AGENT_SERVICE, "CreateSandbox")
    assert err.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(ValueError, match="no generated module defines"):
        Dispatcher({}, services=("no.Such",))
    with pytest.raises(ValueError, match="not served"):
        Dispatcher({AGENT_SERVICE: object()}, services=(HYPERVISOR_SERVICE,))
