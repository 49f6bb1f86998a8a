"""hv.vm without booting: image.json paths, absolute paths for the tools, the mount namespace."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hv.vm import GuestImage, Vm, VmConfig, VmError


def test_relative_image_paths_are_relative_to_the_build_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = tmp_path / "build"
    build.mkdir()
    (build / "image.json").write_text(
        json.dumps({"kernel": "kernel/vmlinux", "initrd": "/abs/initrd.img", "image": None})
    )
    monkeypatch.chdir("/")
    image = GuestImage.load(Path(os.path.relpath(build, "/")))
    assert image.kernel == build / "kernel" / "vmlinux"
    assert image.initrd == Path("/abs/initrd.img")
    assert image.disk is None


@pytest.mark.parametrize("content", ["{", "[]", '{"initrd": "x"}'])
def test_a_broken_manifest_says_to_rebuild(tmp_path: Path, content: str) -> None:
    (tmp_path / "image.json").write_text(content)
    with pytest.raises(VmError, match=r"image.json is unreadable .*run `make image`"):
        GuestImage.load(tmp_path)


def test_a_missing_manifest_names_it(tmp_path: Path) -> None:
    with pytest.raises(VmError, match=rf"{tmp_path}/image.json missing \(run `make image` first\)"):
        GuestImage.load(tmp_path)


def test_every_path_handed_to_qemu_and_virtiofsd_is_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = VmConfig(kernel=Path("k/vmlinux"), initrd=Path("k/initrd"), rundir=Path("build/vm"))
    assert cfg.kernel == tmp_path / "k" / "vmlinux"
    assert cfg.rundir == tmp_path / "build" / "vm"
    assert cfg.shared_dir == tmp_path / "build" / "vm" / "shared"
    vm = Vm(cfg)
    vm.share_mode = "9p"
    argv = vm.qemu_argv()
    assert f"local,id=fs0,path={tmp_path}/build/vm/shared,security_model=none" in argv
    assert str(tmp_path / "k" / "vmlinux") in argv


def test_the_share_server_runs_in_the_given_mount_namespace(tmp_path: Path) -> None:
    cfg = VmConfig(kernel=tmp_path / "k", initrd=None, rundir=tmp_path, mount_ns="/proc/self/fd/7")
    assert Vm(cfg)._in_share_ns(["virtiofsd", "-o", "x"]) == [
        "nsenter",
        "--mount=/proc/self/fd/7",
        "--",
        "virtiofsd",
        "-o",
        "x",
    ]
    assert Vm(VmConfig(kernel=tmp_path / "k", initrd=None, rundir=tmp_path))._in_share_ns(
        ["q"]
    ) == ["q"]


def test_a_run_directory_too_long_for_socket_paths_is_refused(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"x")
    rundir = tmp_path / ("d" * 100)
    with pytest.raises(VmError, match="too long for unix socket paths"):
        Vm(VmConfig(kernel=kernel, initrd=None, rundir=rundir)).start()
    assert not rundir.exists()
