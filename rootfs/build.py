#!/usr/bin/env python3
"""Build the guest root filesystem tree from Debian packages and PyPI wheels only.

The tree (``--out``, default ``build/rootfs``) is what both the initrd and the disk image are packed
from (``image-build/``). Its parts, each a named step with its own log under ``build/logs/``:

1. ``python``   Debian's python3.11 (approach A of vm-boot-facts: a trimmed copy of the host's
                package files: ``/usr/bin/python3.11`` and ``/usr/lib/python3.11`` without tests,
                tkinter, idlelib, lib2to3, ensurepip, distutils, sqlite, curses, ...).
2. ``wheels``   The agent's pinned dependencies (``requirements-wheels.txt``: protobuf, pyroute2,
                uvloop as cp311 manylinux wheels, hash-checked) and python-prctl, compiled from its
                hash-checked sdist with the host's gcc against Debian's python3.11 headers.
3. ``agent``    The ``agent`` and ``oci`` packages of this checkout.
   ``policy``   With a policy (``make image POLICY=1``): the policy engine's wheels
                (``requirements-policy.txt``) and the default policy file at
                ``/etc/kata-opa/default-policy.rego``, compiled first as the agent will
                (``agent.policy.check``: a policy that does not compile fails the build).
4. ``pyc``      Everything precompiled with ``compileall --invalidation-mode unchecked-hash``
                (no source stat at import; deterministic output).
5. ``busybox``  busybox-static with its applet links (the debug shell and a few tools).
6. ``libs``     The shared libraries of every ELF in the tree (ldd), plus libseccomp.so.2 (the
                container engine's seccomp binding loads it with ctypes).
7. ``modules``  The kernel modules the guest needs (``rootfs/modules.py``).
8. ``files``    /init, /etc, device nodes, mount points, the systemd units.

Cached: ``build/rootfs.json`` records a key over every input (this builder's sources, the
requirement files, the agent/oci sources, the Debian package versions, the kernel); an unchanged key
skips the build.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rootfs import modules as kmods  # noqa: E402
from rootfs.steps import (  # noqa: E402
    BuildError,
    Logs,
    cached,
    capture,
    digest,
    mark,
    run,
    say,
    source_date_epoch,
    step,
    tree_digest,
)

HOST_PYTHON = Path("/usr/bin/python3.11")
HOST_STDLIB = Path("/usr/lib/python3.11")
PYVER = "3.11"
#: Where the agent and its dependencies live in the guest: on Debian python3.11's default sys.path,
#: so `python3.11 -I -m oci.engine.init` (isolated mode) finds them too.
GUEST_SITE = "usr/lib/python3/dist-packages"
DEBIAN_PACKAGES = ("python3.11", "libpython3.11-stdlib", "busybox-static", "libseccomp2", "libcap2")
BUILD_PACKAGES = ("gcc", "libpython3.11-dev", "libcap-dev")

#: Parts of the standard library the agent never uses.
STDLIB_EXCLUDE_DIRS = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "pydoc_data",
    "distutils",
    "ensurepip",
    "venv",
    "sqlite3",
    "dbm",
    "curses",
    "site-packages",
    "dist-packages",
    "__pycache__",
    f"config-{PYVER}-x86_64-linux-gnu",
    "__phello__",
    "msilib",
    "xmlrpc",
    "wsgiref",
}
STDLIB_EXCLUDE_FILES = {
    "turtle.py",
    "antigravity.py",
    "this.py",
    "__hello__.py",
    "sitecustomize.py",
    "pydoc.py",
    "EXTERNALLY-MANAGED",
    "LICENSE.txt",
    "_pydecimal.py",
    "smtpd.py",
    "imaplib.py",
    "nntplib.py",
    "mailbox.py",
    "ftplib.py",
    "poplib.py",
    "smtplib.py",
    "telnetlib.py",
    "tkinter.py",
}
DYNLOAD_EXCLUDE = re.compile(
    r"^(_test|_ctypes_test|_xxtestfuzz|xxlimited|_xxsubinterpreters|_curses|readline|_dbm|_gdbm"
    r"|nis|_sqlite3|_tkinter|_decimal|ossaudiodev|audioop|_crypt|_codecs_)"
)
#: Loaded with ctypes by oci/syscalls (not visible to ldd).
DLOPEN_LIBS = ("libseccomp.so.2", "libcap.so.2")

INIT_SCRIPT = f"""#!/usr/bin/python{PYVER} -IS
# The guest's init: the Kata agent itself (agent/boot/init.py: its channel first, then the PID 1
# duties around it). -S: no site module, whose start-up cost under TCG would buy nothing here but
# the dist-packages entry of sys.path.
import sys

sys.path.append("/{GUEST_SITE}")
from agent.boot.init import main

raise SystemExit(main())
"""

ETC_FILES = {
    "etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    ),
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "localhost\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/resolv.conf": "",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
    "etc/os-release": 'NAME="kata-agent-py guest"\nID=kata-agent-py\nID_LIKE=debian\n',
    "etc/profile": (
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        "export PS1='[guest \\w]# '\n"
    ),
}

#: (path, type, major, minor, mode) of the static device nodes; /dev is a devtmpfs at run time, but
#: Python needs /dev/urandom (and the kernel /dev/console) before anything is mounted.
DEVICE_NODES = (
    ("dev/console", "c", 5, 1, 0o600),
    ("dev/null", "c", 1, 3, 0o666),
    ("dev/zero", "c", 1, 5, 0o666),
    ("dev/random", "c", 1, 8, 0o666),
    ("dev/urandom", "c", 1, 9, 0o666),
    ("dev/tty", "c", 5, 0, 0o666),
    ("dev/kmsg", "c", 1, 11, 0o644),
)
MOUNT_POINTS = ("proc", "sys", "dev", "run", "tmp", "mnt", "root", "var/log", "var/tmp")
SYSTEMD_UNITS = ("kata-agent.service", "kata-containers.target")


def dpkg_versions(packages: tuple[str, ...], logs: Logs) -> dict[str, str]:
    versions: dict[str, str] = {}
    missing = []
    for pkg in packages:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version} ${db:Status-Abbrev}", pkg],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or proc.stdout.split()[1:2] != ["ii"]:
            missing.append(pkg)
        else:
            versions[pkg] = proc.stdout.split()[0]
    if missing:
        raise BuildError(
            f"step check-packages: Debian packages not installed: {' '.join(missing)} "
            f"(apt-get install -y --no-install-recommends {' '.join(missing)})"
        )
    return versions


def inputs_key(
    kernel_key: str, logs: Logs, *, uvloop: bool = False, policy: Path | None = None
) -> str:
    return digest(
        [
            f"uvloop={uvloop}",
            "policy=" + (hashlib.sha256(policy.read_bytes()).hexdigest() if policy else ""),
            tree_digest(REPO / "rootfs", suffixes=(".py", ".txt", ".service", ".target")),
            tree_digest(REPO / "agent"),
            tree_digest(REPO / "oci"),
            json.dumps(dpkg_versions(DEBIAN_PACKAGES, logs), sort_keys=True),
            kernel_key,
        ]
    )


# -- 1. python ---------------------------------------------------------------------------------


def copy_python(root: Path) -> None:
    if not HOST_PYTHON.is_file() or not HOST_STDLIB.is_dir():
        raise BuildError(f"step python: {HOST_PYTHON} missing (apt-get install python3.11)")
    dest_bin = root / "usr" / "bin"
    dest_bin.mkdir(parents=True, exist_ok=True)
    shutil.copy2(HOST_PYTHON, dest_bin / f"python{PYVER}")
    os.symlink(f"python{PYVER}", dest_bin / "python3")
    dest = root / "usr" / "lib" / f"python{PYVER}"
    for src_dir, dirs, files in os.walk(HOST_STDLIB):
        rel = Path(src_dir).relative_to(HOST_STDLIB)
        dirs[:] = sorted(d for d in dirs if d not in STDLIB_EXCLUDE_DIRS and d != "tests")
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            if rel == Path(".") and name in STDLIB_EXCLUDE_FILES:
                continue
            if rel == Path("lib-dynload") and DYNLOAD_EXCLUDE.match(name):
                continue
            src = Path(src_dir) / name
            if src.is_symlink() and not src.exists():
                continue
            shutil.copy2(src, dest / rel / name)


# -- 2. wheels ---------------------------------------------------------------------------------


def fetch_wheels(
    cache: Path,
    site: Path,
    logs: Logs,
    *,
    skip: frozenset[str] = frozenset(),
    requirements: str = "requirements-wheels.txt",
) -> None:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    req = REPO / "rootfs" / requirements
    wanted = {name: h for name, h in pins(req).items() if name not in skip}
    files = cached_files(wheels, wanted)
    if files is None:
        _pip_download_wheels(wheels, req, logs)
        files = cached_files(wheels, wanted)
    if files is None:
        raise BuildError(
            f"step wheels: pinned wheels missing after pip download; log: {logs.path('wheels')}"
        )
    for whl in files.values():
        _extract_wheel(whl, site)
    # Extension modules from wheels (and the libraries auditwheel bundles with them, as
    # regopy.libs/libssl-*.so.3) carry symbols they never need at run time.
    for so in sorted({*site.rglob("*.so"), *site.rglob("*.libs/*.so.*")}):
        run("wheels", ["strip", "--strip-unneeded", so], logs)


def _pip_download_wheels(wheels: Path, req: Path, logs: Logs) -> None:
    run(
        "wheels",
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "-q",
            "--only-binary=:all:",
            "--platform",
            "manylinux2014_x86_64",
            "--platform",
            "manylinux_2_34_x86_64",
            "--python-version",
            PYVER,
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "--no-deps",
            "--require-hashes",
            "-r",
            req,
            "-d",
            wheels,
        ],
        logs,
    )


def _extract_wheel(whl: Path, site: Path) -> None:
    with zipfile.ZipFile(whl) as zf:
        for info in zf.infolist():
            top = info.filename.split("/")[0]
            if top.endswith((".dist-info", ".data")) and not info.filename.endswith("METADATA"):
                continue
            if (
                info.filename.endswith((".pyx", ".pxd", ".pyi", ".c", ".h"))
                or "/tests/" in info.filename
            ):
                continue
            zf.extract(info, site)


def pins(req: Path) -> dict[str, set[str]]:
    """Package name -> the sha256 hashes a requirements file allows for it."""
    found: dict[str, set[str]] = {}
    name = ""
    for line in req.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==", line)
        if m:
            name = m.group(1).lower().replace("_", "-")
            found[name] = set()
        for h in re.findall(r"--hash=sha256:([0-9a-f]{64})", line):
            if name:
                found[name].add(h)
    return found


def cached_files(directory: Path, wanted: dict[str, set[str]]) -> dict[str, Path] | None:
    """For each pinned package, the file in `directory` whose sha256 is pinned; None if any is
    missing (then pip downloads; a cache hit needs no network)."""
    by_hash: dict[str, Path] = {}
    for path in sorted(directory.iterdir()) if directory.is_dir() else []:
        if path.is_file():
            by_hash[hashlib.sha256(path.read_bytes()).hexdigest()] = path
    result: dict[str, Path] = {}
    for name, hashes in wanted.items():
        hit = next((by_hash[h] for h in sorted(hashes) if h in by_hash), None)
        if hit is None:
            return None
        result[name] = hit
    return result


def build_prctl(cache: Path, site: Path, logs: Logs) -> None:
    sdists = cache / "sdist"
    sdists.mkdir(parents=True, exist_ok=True)
    req = REPO / "rootfs" / "requirements-sdist.txt"
    files = cached_files(sdists, pins(req))
    if files is None:
        run(
            "prctl",
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "-q",
                "--no-binary=:all:",
                "--no-deps",
                # pip reads the sdist's metadata in an isolated build environment with the
                # setuptools and wheel it needs: the interpreter running the build may lack them.
                "--require-hashes",
                "-r",
                req,
                "-d",
                sdists,
            ],
            logs,
        )
        files = cached_files(sdists, pins(req))
    if files is None or "python-prctl" not in files:
        raise BuildError(
            f"step prctl: no pinned python-prctl sdist in {sdists}; log: {logs.path('prctl')}"
        )
    tarball = files["python-prctl"]
    include = Path(f"/usr/include/python{PYVER}")
    if not (include / "Python.h").is_file():
        raise BuildError(
            f"step prctl: {include}/Python.h missing (apt-get install libpython{PYVER}-dev)"
        )
    with tempfile.TemporaryDirectory(prefix="prctl.") as tmp, tarfile.open(tarball) as tf:
        # extraction filters exist from Python 3.11.4 on; Debian 12's python3.11 (CI) is 3.11.2
        if hasattr(tarfile, "data_filter"):
            tf.extractall(tmp, filter="data")
        else:
            tf.extractall(tmp)  # a hash-checked sdist from PyPI
        src = next(Path(tmp).glob("python-prctl-*"))
        so = site / f"_prctl.cpython-{PYVER.replace('.', '')}-x86_64-linux-gnu.so"
        run(
            "prctl",
            [
                "gcc",
                "-shared",
                "-fPIC",
                "-O2",
                "-g0",
                "-s",
                f"-I{include}",
                src / "_prctlmodule.c",
                "-lcap",
                "-o",
                so,
            ],
            logs,
        )
        shutil.copy2(src / "prctl.py", site / "prctl.py")


# -- 3. agent ----------------------------------------------------------------------------------


def copy_agent(site: Path) -> None:
    for pkg in ("agent", "oci"):
        src = REPO / pkg
        if not src.is_dir():
            continue
        shutil.copytree(
            src,
            site / pkg,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi", "py.typed"),
        )


# -- policy ----------------------------------------------------------------------------------

#: Where the agent looks for its policy (agent.policy.point.DEFAULT_POLICY_FILE; Kata's path).
GUEST_POLICY = "etc/kata-opa/default-policy.rego"


def install_policy(root: Path, site: Path, policy: Path, logs: Logs) -> None:
    """The default policy file, after compiling it with the engine and agent just installed in
    the tree (the host's python3.11 runs the guest's packages: same interpreter version)."""
    text = policy.read_text()
    check = (
        f"import sys; sys.path.insert(0, {str(site)!r}); "
        "from agent.policy.check import main; raise SystemExit(main())"
    )
    done = subprocess.run(
        [str(HOST_PYTHON), "-I", "-c", check],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    logs.path("policy").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        reason = done.stdout.strip() or f"the check exited with {done.returncode}"
        raise BuildError(f"step policy: {policy}: {reason}; log: {logs.path('policy')}")
    dest = root / GUEST_POLICY
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)


# -- 4. pyc ------------------------------------------------------------------------------------


def precompile(root: Path, logs: Logs) -> None:
    # The guest's own interpreter compiles (same magic number); -s/-p record guest paths.
    targets = [root / "usr" / "lib" / f"python{PYVER}", root / GUEST_SITE]
    run(
        "pyc",
        [
            HOST_PYTHON,
            "-I",
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "-o",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            root,
            "-p",
            "/",
            "-x",
            r"(/test/|/tests/|lib2to3|/bad_)",
            *targets,
        ],
        logs,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SOURCE_DATE_EPOCH": "0"},
    )


# -- 5. busybox --------------------------------------------------------------------------------


def install_busybox(root: Path, logs: Logs) -> None:
    bb = Path("/bin/busybox")
    if not bb.is_file():
        raise BuildError("step busybox: /bin/busybox missing (apt-get install busybox-static)")
    dest = root / "usr" / "bin" / "busybox"
    shutil.copy2(bb, dest)
    applets = capture("busybox", [str(bb), "--list-full"], logs).split()
    for applet in applets:
        # `init`/`linuxrc` would shadow the agent as the image's init.
        if applet.split("/")[-1] in ("init", "linuxrc"):
            continue
        link = root / "usr" / _usrmerged(applet)
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(dest, link.parent), link)


def _usrmerged(path: str) -> str:
    """/usr/bin/x and /bin/x both go to usr/bin/x (the image is usrmerged like Debian 12)."""
    return path.lstrip("/").removeprefix("usr/")


# -- 6. libs -----------------------------------------------------------------------------------


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def install_libs(root: Path, logs: Logs) -> list[str]:
    elves = [
        p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and _is_elf(p)
    ]
    elves = [p for p in elves if not p.name.endswith(".ko")]
    wanted: set[str] = set()
    found = capture("libs", ["/sbin/ldconfig", "-p"], logs)
    for lib in DLOPEN_LIBS:
        m = re.search(rf"\s{re.escape(lib)} \(libc6,x86-64\) => (\S+)", found)
        if m is None:
            raise BuildError(
                f"step libs: {lib} not found by ldconfig (apt-get install {lib.split('.so')[0]}2)"
            )
        wanted.add(m.group(1))
    for elf in elves:
        proc = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                wanted.add(parts[2])
            elif parts and parts[0].startswith("/"):
                wanted.add(parts[0])
    installed = []
    todo = sorted(wanted)
    seen: set[str] = set()
    while todo:
        lib = todo.pop()
        if lib in seen:
            continue
        seen.add(lib)
        real = Path(lib).resolve()
        # Debian is usrmerged: /lib -> usr/lib, so install below usr/.
        dest = root / "usr" / str(Path(lib).parent.resolve()).removeprefix("/usr/").lstrip("/")
        dest.mkdir(parents=True, exist_ok=True)
        if not (dest / real.name).exists():
            shutil.copy2(real, dest / real.name)
        if Path(lib).name != real.name and not (dest / Path(lib).name).exists():
            os.symlink(real.name, dest / Path(lib).name)
        installed.append(lib)
        proc = subprocess.run(["ldd", str(real)], capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                todo.append(parts[2])
    return installed


# -- 8. files ----------------------------------------------------------------------------------


def base_layout(root: Path) -> None:
    """usrmerged layout like Debian 12: /bin, /sbin, /lib, /lib64 are links into /usr."""
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "etc", "var"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, target in (
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ):
        os.symlink(target, root / link)
    # A directory, not the usual link to /run: the agent compares its pinned namespace paths
    # (/var/run/sandbox-ns) with /proc/self/mountinfo, which shows resolved paths.
    (root / "var" / "run").mkdir()


def install_files(root: Path) -> None:
    for d in MOUNT_POINTS:
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "root").chmod(0o700)
    (root / "tmp").chmod(0o1777)
    init = root / "init"
    init.write_text(INIT_SCRIPT)
    init.chmod(0o755)
    sbin_init = root / "usr" / "sbin" / "init"
    if sbin_init.exists() or sbin_init.is_symlink():
        sbin_init.unlink()
    os.symlink("../../init", sbin_init)
    for rel, text in ETC_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    units = root / "usr" / "lib" / "systemd" / "system"
    units.mkdir(parents=True, exist_ok=True)
    for unit in SYSTEMD_UNITS:
        shutil.copy2(REPO / "rootfs" / "systemd" / unit, units / unit)
    if os.geteuid() == 0:
        for rel, kind, major, minor, mode in DEVICE_NODES:
            path = root / rel
            if not path.exists():
                os.mknod(
                    path,
                    mode | (stat.S_IFCHR if kind == "c" else stat.S_IFBLK),
                    os.makedev(major, minor),
                )
                os.chmod(path, mode)


def normalise(root: Path, epoch: int) -> None:
    """Fixed mtimes everywhere, so the packed images are reproducible."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in (*filenames, *dirnames):
            os.utime(os.path.join(dirpath, name), (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


# -- driver ------------------------------------------------------------------------------------


def build(
    out: Path,
    kernel_out: Path,
    cache: Path,
    logs: Logs,
    *,
    force: bool = False,
    uvloop: bool = False,
    policy: Path | None = None,
) -> Path:
    """Build the tree. ``uvloop``: ship uvloop; without it the agent runs on asyncio's own loop,
    with less RSS (image-build/README.md, "uvloop in the guest"). The ssl module stays either
    way: pyroute2 imports it. ``policy``: ship the policy engine and this default policy."""
    kernel_meta = kernel_out / "kernel.json"
    if not kernel_meta.is_file():
        raise BuildError(
            f"step rootfs: no prepared kernel in {kernel_out} (run image-build/kernel.py first)"
        )
    kmeta = json.loads(kernel_meta.read_text())
    with step("check-packages", logs):
        dpkg_versions(BUILD_PACKAGES, logs)
        key = inputs_key(kmeta["key"], logs, uvloop=uvloop, policy=policy)
    stamp = out.parent / f"{out.name}.json"
    if not force and cached(stamp, key) and out.is_dir():
        say(f"rootfs: cached in {out}")
        return out
    tmp = out.parent / f".{out.name}.new"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    site = tmp / GUEST_SITE
    release = kmeta["release"]
    with step("layout", logs):
        base_layout(tmp)
        site.mkdir(parents=True, exist_ok=True)
    with step("python", logs):
        copy_python(tmp)
    with step("wheels", logs):
        fetch_wheels(cache, site, logs, skip=frozenset() if uvloop else frozenset({"uvloop"}))
    with step("prctl", logs):
        build_prctl(cache, site, logs)
    with step("agent", logs):
        copy_agent(site)
    if policy is not None:
        with step("policy", logs):
            fetch_wheels(cache, site, logs, requirements="requirements-policy.txt")
            install_policy(tmp, site, policy, logs)
    with step("pyc", logs):
        precompile(tmp, logs)
    with step("busybox", logs):
        install_busybox(tmp, logs)
    with step("libs", logs):
        install_libs(tmp, logs)
    with step("modules", logs):
        mods_dir = kernel_out / "modules" / release
        if mods_dir.is_dir():
            try:
                kmods.install(kmods.closure(mods_dir), mods_dir, tmp, release)
            except kmods.ModuleError as err:
                raise BuildError(f"step modules: {err}") from err
    with step("files", logs):
        install_files(tmp)
        normalise(tmp, source_date_epoch(os.environ))
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    mark(stamp, key, release=release)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=REPO / "build" / "rootfs")
    p.add_argument(
        "--kernel", type=Path, default=REPO / "build" / "kernel", help="prepared kernel dir"
    )
    p.add_argument("--cache", type=Path, default=REPO / "build" / "cache")
    p.add_argument("--logs", type=Path, default=REPO / "build" / "logs")
    p.add_argument("--force", action="store_true")
    p.add_argument("--with-uvloop", action="store_true", help="ship uvloop in the guest")
    p.add_argument("--policy", type=Path, help="ship the policy engine and this default policy")
    args = p.parse_args(argv)
    try:
        build(
            args.out,
            args.kernel,
            args.cache,
            Logs(args.logs),
            force=args.force,
            uvloop=args.with_uvloop,
            policy=args.policy,
        )
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
