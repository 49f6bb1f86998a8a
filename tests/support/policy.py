"""Test and bench helpers for agent policies: the policies of ``tests/support/policies`` (and the
image's default, ``rootfs/kata-opa/allow-all.rego``), and the CRI annotations of the pod that
``genpolicy-style.rego`` describes."""

from __future__ import annotations

from pathlib import Path

POLICIES = Path(__file__).resolve().parent / "policies"
ALLOW_ALL = Path(__file__).resolve().parents[2] / "rootfs" / "kata-opa" / "allow-all.rego"
GENPOLICY_STYLE = POLICIES / "genpolicy-style.rego"
SANDBOX_NAME = "bench"
BUNDLES = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
SANDBOX_ID = "4f4a3b5e0c2d1e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"


def policy_text(name: str, *, run_dir: Path | None = None) -> str:
    """A policy of ``tests/support/policies`` (``name`` without ``.rego``); ``run_dir``: the
    agent's run directory, in place of /run/kata-containers (the paths the policy allows)."""
    text = (ALLOW_ALL if name == "allow-all" else POLICIES / f"{name}.rego").read_text()
    if run_dir is not None:
        text = text.replace('"/run/kata-containers/', f'"{run_dir}/')
    return text


def pod_annotations(container: str, *, sandbox: str = SANDBOX_NAME) -> dict[str, str]:
    """What containerd's CRI plugin and the Kata shim put on a pod container's spec."""
    return {
        "io.kubernetes.cri.container-name": container,
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": SANDBOX_ID,
        "io.kubernetes.cri.sandbox-name": sandbox,
        "io.kubernetes.cri.sandbox-namespace": "default",
        "io.katacontainers.pkg.oci.bundle_path": f"{BUNDLES}/{container}",
        "io.katacontainers.pkg.oci.container_type": "pod_container",
    }
