"""kata-agent-py's OCI side: the runtime-spec model (`oci.spec`), cgroup managers
(`oci.cgroups`), the in-guest container engine (`oci.engine`) and its syscall seam
(`oci.syscalls`). Nothing under `oci` imports `agent`."""
