"""CVE-class tests through a real agent: what a container can reach of the agent and the
engine.

* CVE-2024-21626 class: no fd of the agent or the engine's spawner is open in a container
  process or an exec'd one, and their cwd is inside the container (checked from inside the
  container, for every process it can see, while execs come and go).
* CVE-2019-5736 class: a container process that tries, in a loop, to open the executable of
  every process it can see for writing (the interpreter of an init or exec being set up
  included) never succeeds.
* A symlink in the container's rootfs cannot redirect a spec mount's destination out of it.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from agent.rpc.pb import agent_pb2, oci_pb2
from tests.root.lifecycle.conftest import Pod, agent_mounts

pytestmark = pytest.mark.slow

# what a container process's fds may be: its stdio, ttys, pipes, anonymous inodes, sockets,
# and the directory a listing of /proc itself opens
_ALLOWED_FD = re.compile(
    r"^(pipe:\[\d+\]|socket:\[\d+\]|anon_inode:.*|/dev/null|/dev/pts/\d+|/dev/ptmx|/proc(/.*)?)$"
)

_PROBE = r"""
for p in /proc/[0-9]*; do
  n=${p#/proc/}
  [ -e $p/exe ] || continue
  echo "P $n cwd=$(readlink $p/cwd 2>/dev/null) exe=$(readlink $p/exe 2>/dev/null)"
  for f in $p/fd/*; do l=$(readlink $f 2>/dev/null) && echo "F $n $l"; done
done
"""

_ATTACKER = r"""
i=0
while [ $i -lt 100000 ] && [ ! -e /tmp/stop ]; do
  for p in /proc/[0-9]*; do
    [ "$p" = "/proc/$$" ] && continue
    if ( : >> $p/exe ) 2>/dev/null; then echo "OPENED-EXE $p $(readlink $p/exe)"; fi
    c=$(readlink $p/cwd 2>/dev/null) && [ -n "$c" ] && [ "${c#/}" = "$c" ] && echo "CWD $p $c"
    for f in $p/fd/*; do
      l=$(readlink $f 2>/dev/null) || continue
      case "$l" in
        pipe:*|socket:*|anon_inode:*|/dev/*|/proc*) ;;
        *) echo "FD $p $l";;
      esac
    done
  done
  i=$((i+1))
done
echo DONE
"""


def _bad_lines(out: str) -> list[str]:
    bad = []
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if parts[0] == "P":
            cwd = parts[2].split(" exe=")[0].removeprefix("cwd=")
            if cwd != "/":
                bad.append(line)
        elif parts[0] == "F" and not _ALLOWED_FD.match(parts[2]):
            bad.append(line)
    return bad


async def test_no_agent_or_spawner_fd_or_cwd_reaches_a_container(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "100000"])
    await pod.exec("c1", "long", ["sleep", "100000"])
    status, out, err = await pod.run_exec("c1", "probe", ["sh", "-c", _PROBE])
    assert status == 0, err
    text = out.decode()
    assert text.count("\nP ") + text.startswith("P ") >= 3  # init, the long exec, the probe
    assert _bad_lines(text) == [], text
    agent_paths = (str(pod.agent.workdir), "python", "/usr/lib", "kag-")
    assert not [ln for ln in text.splitlines() if any(a in ln for a in agent_paths)], text


async def test_container_cannot_open_engine_executables_for_writing(pod: Pod) -> None:
    await pod.create("att", ["sh", "-c", _ATTACKER])
    for i in range(40):  # execs come and go while the attacker scans
        status, _, _ = await pod.run_exec("att", f"e{i}", ["true"])
        assert status == 0
    await pod.run_exec("att", "stop", ["touch", "/tmp/stop"])
    out = await asyncio.wait_for(pod.read("att", "att"), 120)
    while b"DONE" not in out:
        more = await asyncio.wait_for(pod.read("att", "att"), 120)
        if not more:
            break
        out += more
    text = out.decode(errors="replace")
    assert "DONE" in text
    found = [ln for ln in text.splitlines() if ln.startswith(("OPENED-EXE", "CWD", "FD"))]
    assert found == [], text


async def test_rootfs_symlink_cannot_lead_a_mount_out(pod: Pod, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "hosts").write_text("outside\n")
    depth = len(pod.rootfs.parts) + 2
    os.symlink("../" * depth + str(outside).lstrip("/"), pod.rootfs / "evil")
    os.symlink(str(outside), pod.rootfs / "evil_abs")
    os.symlink(str(outside / "hosts"), pod.rootfs / "evil_file")
    src = tmp_path / "vol"
    src.mkdir()
    (src / "f").write_text("vol\n")
    spec = pod.spec("m1", ["sh", "-c", "cat /evil_file; ls /evil /evil_abs"])
    spec.Mounts.extend(
        [
            oci_pb2.Mount(destination="/evil/t", type="tmpfs", source="tmpfs"),
            oci_pb2.Mount(destination="/evil_abs", type="bind", source=str(src), options=["rbind"]),
            oci_pb2.Mount(
                destination="/evil_file",
                type="bind",
                source=str(src / "f"),
                options=["bind", "ro"],
            ),
        ]
    )
    await pod.a.CreateContainer(
        agent_pb2.CreateContainerRequest(container_id="m1", exec_id="m1", OCI=spec), timeout=60
    )
    pod.created.append("m1")
    assert agent_mounts(pod.agent, outside) == []
    await pod.a.StartContainer(agent_pb2.StartContainerRequest(container_id="m1"))
    out, err = await asyncio.gather(pod.read("m1", "m1"), pod.read("m1", "m1", stderr=True))
    status = await pod.wait("m1", "m1")
    assert status == 0, err
    assert b"vol\n" in out  # the file bind landed on the link's target inside the rootfs
    assert sorted(p.name for p in outside.iterdir()) == ["hosts"]
    assert (outside / "hosts").read_text() == "outside\n"
    assert agent_mounts(pod.agent, outside) == []
