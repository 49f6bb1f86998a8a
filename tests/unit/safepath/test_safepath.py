"""oci.safepath: nothing resolves outside the root, with openat2 and with the component walk."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oci import safepath as sp


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "openat2":
        sp.set_openat2(None)
        if not sp.openat2_in_use():
            pytest.skip("the kernel has no openat2")
    else:
        sp.set_openat2(False)
    yield request.param
    sp.set_openat2(None)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with a/b/file, links inside and out; outside/ next to it with a secret."""
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "file").write_text("inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret")
    (root / "in_rel").symlink_to("a/b")
    (root / "a" / "up").symlink_to("..")
    (root / "abs").symlink_to("/a/b")
    (root / "esc_rel").symlink_to("../outside")
    (root / "esc_abs").symlink_to(str(tmp_path / "outside"))
    (root / "loop").symlink_to("loop")
    return root


def _errno_of(fn: Callable[..., object], *args: object) -> int | None:
    try:
        fn(*args)
    except OSError as err:
        return err.errno
    raise AssertionError(f"{fn.__name__}{args} did not fail")


def _read(root: Path, path: str, how: int) -> str:
    rfd = sp.open_root(root)
    try:
        fd = sp.open_file(rfd, path, how=how)
    finally:
        os.close(rfd)
    with os.fdopen(fd) as f:
        return f.read()


@pytest.mark.usefixtures("mode")
@pytest.mark.parametrize(
    ("path", "how", "expect"),
    [
        ("a/b/file", sp.BENEATH, "inside"),
        ("/a/b/file", sp.BENEATH, "inside"),  # leading slash: still relative to the root
        ("in_rel/file", sp.BENEATH, "inside"),
        ("a/up/a/b/file", sp.BENEATH, "inside"),
        ("a/../a/b/file", sp.BENEATH, "inside"),
        ("abs/file", sp.IN_ROOT, "inside"),  # absolute link: the root is /
        ("a/up/../../a/b/file", sp.IN_ROOT, "inside"),  # .. clamped at the root
        ("../../a/b/file", sp.IN_ROOT, "inside"),
        ("a/b/file", sp.NO_SYMLINKS, "inside"),
    ],
)
def test_resolves_inside(tree: Path, path: str, how: int, expect: str) -> None:
    assert _read(tree, path, how) == expect


@pytest.mark.usefixtures("mode")
@pytest.mark.parametrize(
    ("path", "how", "code"),
    [
        ("../outside/secret", sp.BENEATH, errno.EXDEV),
        ("esc_rel/secret", sp.BENEATH, errno.EXDEV),
        ("esc_abs/secret", sp.BENEATH, errno.EXDEV),
        ("abs/file", sp.BENEATH, errno.EXDEV),
        ("in_rel/file", sp.NO_SYMLINKS, errno.ELOOP),
        ("loop", sp.BENEATH, errno.ELOOP),
        ("a/b/file/x", sp.BENEATH, errno.ENOTDIR),
        ("a/missing", sp.BENEATH, errno.ENOENT),
        ("a/b\0/file", sp.BENEATH, errno.EINVAL),
    ],
)
def test_refuses(tree: Path, path: str, how: int, code: int) -> None:
    assert _errno_of(_read, tree, path, how) == code


@pytest.mark.usefixtures("mode")
def test_in_root_never_reaches_outside(tree: Path) -> None:
    # esc_abs points at the real outside dir; inside the root that path does not exist
    with pytest.raises(FileNotFoundError):
        _read(tree, "esc_abs/secret", sp.IN_ROOT)
    with pytest.raises(FileNotFoundError):
        _read(tree, "esc_rel/secret", sp.IN_ROOT)


@pytest.mark.usefixtures("mode")
def test_fifo_and_wrong_type_are_never_opened(tree: Path) -> None:
    os.mkfifo(tree / "fifo")
    rfd = sp.open_root(tree)
    try:
        with pytest.raises(sp.WrongType, match="FIFO"):
            sp.open_file(rfd, "fifo", os.O_WRONLY)  # would block forever without the check
        with pytest.raises(sp.WrongType, match="directory"):
            sp.open_file(rfd, "a", os.O_RDONLY)
        fd = sp.open_file(rfd, "a", os.O_RDONLY, kinds=(stat.S_IFDIR,))
        os.close(fd)
    finally:
        os.close(rfd)


@pytest.mark.usefixtures("mode")
def test_mkdirs_creates_below_and_reports(tree: Path) -> None:
    rfd = sp.open_root(tree)
    created: list[str] = []
    try:
        fd = sp.mkdirs(rfd, "in_rel/new/deeper", 0o700, created=created)
        assert sp.real_path(fd) == str(tree / "a" / "b" / "new" / "deeper")
        os.close(fd)
        assert created == ["a/b/new", "a/b/new/deeper"]  # real paths below the root
        assert _errno_of(sp.mkdirs, rfd, "esc_rel/made") == errno.EXDEV
        assert not (tree.parent / "outside" / "made").exists()
        fd = sp.mkdirs(rfd, "esc_abs/made", how=sp.IN_ROOT)
        os.close(fd)
        assert not (tree.parent / "outside" / "made").exists()
        assert (tree / str(tree.parent / "outside").lstrip("/") / "made").is_dir()
        (tree / "dangling").symlink_to("/run/x/resolv.conf")  # as container images have
        fd = sp.mkdirs(rfd, "dangling", how=sp.IN_ROOT)
        os.close(fd)
        assert (tree / "run" / "x" / "resolv.conf").is_dir()
    finally:
        os.close(rfd)


@pytest.mark.usefixtures("mode")
def test_open_at_creates_and_refuses_links(tree: Path) -> None:
    dfd = os.open(tree / "a", os.O_PATH | os.O_DIRECTORY)
    try:
        fd = sp.open_at(dfd, "new.tmp", os.O_WRONLY, 0o600, create=True)
        os.write(fd, b"x")
        os.close(fd)
        assert (tree / "a" / "new.tmp").read_bytes() == b"x"
        assert _errno_of(sp.open_at, dfd, "up", os.O_WRONLY) == errno.ELOOP
        os.mkfifo(tree / "a" / "pipe")
        with pytest.raises(sp.WrongType):
            sp.open_at(dfd, "pipe", os.O_WRONLY, create=True)
    finally:
        os.close(dfd)


def test_mount_id_and_proc_path(tree: Path) -> None:
    fd = sp.open_root(tree)
    try:
        assert sp.mount_id(fd) > 0
        assert os.readlink(sp.proc_path(fd)) == str(tree)
    finally:
        os.close(fd)
