# A Kata agent policy written in the manner of genpolicy's rules.rego: the rules below check each
# request against per-pod data (policy_data, at the end), the way a generated policy does for one
# Kubernetes pod. The pod here is the one bench/lifecycle.py --pod-annotations creates (sandbox
# "bench" in namespace "default", containers "cycle", "box" and "big"). The run directory
# /run/kata-containers appears only in policy_data.common, so a test can point it elsewhere.
#
# Policy state (data.pstate): the first CreateContainer records the sandbox's name and namespace;
# each CreateContainer records which policy container a container id was admitted as, so that
# ExecProcess can check commands against that container and RemoveContainer can forget it.

package agent_policy

import future.keywords.every
import future.keywords.if
import future.keywords.in

# Requests with rules below: denied unless a rule allows them.
default AddARPNeighborsRequest := false
default CopyFileRequest := false
default CreateContainerRequest := false
default CreateSandboxRequest := false
default ExecProcessRequest := false
default ReadStreamRequest := false
default RemoveContainerRequest := false
default SetPolicyRequest := false
default UpdateInterfaceRequest := false
default UpdateRoutesRequest := false
default WriteStreamRequest := false

# Requests allowed as they come. The ones not named at all (AddSwap, GetIPTables, SetIPTables,
# ReseedRandomDev, GetDiagnosticData, ...) are undefined, so denied.
default CloseStdinRequest := true
default DestroySandboxRequest := true
default GetMetricsRequest := true
default GetOOMEventRequest := true
default GuestDetailsRequest := true
default ListInterfacesRequest := true
default ListRoutesRequest := true
default MemHotplugByProbeRequest := true
default OnlineCPUMemRequest := true
default PauseContainerRequest := true
default RemoveStaleVirtiofsShareMountsRequest := true
default ResumeContainerRequest := true
default SetGuestDateTimeRequest := true
default SignalProcessRequest := true
default StartContainerRequest := true
default StatsContainerRequest := true
default TtyWinResizeRequest := true
default UpdateContainerRequest := true
default UpdateEphemeralMountsRequest := true
default WaitProcessRequest := true

# Set to true to log and allow every request this policy denies (debugging only).
default AllowRequestsFailingPolicy := false

ReadStreamRequest if {
	policy_data.request_defaults.ReadStreamRequest == true
}

WriteStreamRequest if {
	policy_data.request_defaults.WriteStreamRequest == true
}

SetPolicyRequest if {
	policy_data.request_defaults.SetPolicyRequest == true
}

######################################################################
# CreateContainerRequest: pick the policy container named by the CRI container-name annotation,
# compare the OCI spec and storages with it, and record the admission in the policy state.

CreateContainerRequest := {"ops": ops, "allowed": true} if {
	i_oci := input.OCI
	i_name := i_oci.Annotations["io.kubernetes.cri.container-name"]
	print("CreateContainerRequest: container", input.container_id, "name", i_name)

	regex.match(policy_data.common.container_id_regex, input.container_id)
	not data.pstate.containers[input.container_id]

	some p_index, p_container in policy_data.containers
	p_container.name == i_name
	p_oci := p_container.OCI

	p_oci.Version == i_oci.Version
	p_oci.Root.Readonly == i_oci.Root.Readonly
	allow_root_path(i_oci.Root.Path, input.container_id)

	sandbox_name := i_oci.Annotations["io.kubernetes.cri.sandbox-name"]
	state_ops := sandbox_state_ops(i_oci.Annotations)

	allow_annotations(p_oci.Annotations, i_oci.Annotations)
	allow_process(p_oci.Process, i_oci.Process, sandbox_name)
	allow_linux(p_oci.Linux, i_oci.Linux)

	p_mounts := {m.destination: m | some m in p_oci.Mounts}
	every i_mount in i_oci.Mounts {
		allow_mount(p_mounts[i_mount.destination], i_mount, input.container_id)
	}

	every i_storage in input.storages {
		allow_storage(p_container.storages, i_storage)
	}
	count(input.devices) == 0
	input.sandbox_pidns == false
	input.string_user == null

	admit := {"op": "add", "path": concat("/", ["/pstate/containers", input.container_id]), "value": p_index}
	ops := array.concat(state_ops, [admit])
	print("CreateContainerRequest: success")
}

# The first container of the sandbox records its name and namespace; later ones must match.
sandbox_state_ops(i_annotations) := ops if {
	not data.pstate.sandbox_name
	name := i_annotations["io.kubernetes.cri.sandbox-name"]
	namespace := i_annotations["io.kubernetes.cri.sandbox-namespace"]
	regex.match(policy_data.sandbox.name_regex, name)
	namespace == policy_data.sandbox.namespace
	ops := [
		{"op": "add", "path": "/pstate/sandbox_name", "value": name},
		{"op": "add", "path": "/pstate/namespace", "value": namespace},
		{"op": "add", "path": "/pstate/containers", "value": {}},
	]
}

sandbox_state_ops(i_annotations) := [] if {
	data.pstate.sandbox_name == i_annotations["io.kubernetes.cri.sandbox-name"]
	data.pstate.namespace == i_annotations["io.kubernetes.cri.sandbox-namespace"]
}

allow_root_path(i_path, container_id) if {
	some pattern in policy_data.common.root_paths
	expanded := replace(replace(pattern, "$(cpath)", policy_data.common.cpath), "$(container-id)", container_id)
	regex.match(concat("", ["^", expanded, "$"]), i_path)
}

######################################################################
# Annotations: each one of the input is either pinned by the policy container (a regex) or has a
# prefix the policy ignores; each one the policy container names must be there.

allow_annotations(p_annotations, i_annotations) if {
	every key, value in i_annotations {
		allow_annotation(p_annotations, key, value)
	}
	every key, _ in p_annotations {
		i_annotations[key]
	}
}

allow_annotation(p_annotations, key, value) if {
	pattern := p_annotations[key]
	regex.match(concat("", ["^", pattern, "$"]), value)
}

allow_annotation(p_annotations, key, _) if {
	not p_annotations[key]
	some prefix in policy_data.common.ignored_annotation_prefixes
	startswith(key, prefix)
}

######################################################################
# Process: the fields genpolicy pins, with Args and Env as anchored regexes.

allow_process(p_process, i_process, sandbox_name) if {
	p_process.Terminal == i_process.Terminal
	p_process.Cwd == i_process.Cwd
	p_process.NoNewPrivileges == i_process.NoNewPrivileges
	i_process.ApparmorProfile == ""
	i_process.SelinuxLabel == ""
	allow_user(p_process.User, i_process.User)
	allow_args(p_process.Args, i_process.Args)
	every i_var in i_process.Env {
		allow_env_var(p_process.Env, i_var, sandbox_name)
	}
	allow_caps(p_process.Capabilities, i_process.Capabilities)
}

allow_user(p_user, i_user) if {
	p_user.UID == i_user.UID
	p_user.GID == i_user.GID
	every gid in i_user.AdditionalGids {
		gid in p_user.AdditionalGids
	}
}

allow_args(p_args, i_args) if {
	count(p_args) == count(i_args)
	every i, i_arg in i_args {
		regex.match(concat("", ["^", p_args[i], "$"]), i_arg)
	}
}

allow_env_var(p_env, i_var, _) if {
	i_var in p_env
}

allow_env_var(p_env, i_var, sandbox_name) if {
	not i_var in p_env
	some p_var in p_env
	pattern := replace(p_var, "$(sandbox-name)", sandbox_name)
	regex.match(concat("", ["^", pattern, "$"]), i_var)
}

allow_caps(p_caps, i_caps) if {
	p_caps == null
	i_caps == null
}

allow_caps(p_caps, i_caps) if {
	p_caps != null
	i_caps != null
	every key in ["Ambient", "Bounding", "Effective", "Inheritable", "Permitted"] {
		allow_subset(p_caps[key], i_caps[key])
	}
}

allow_subset(p_items, i_items) if {
	p_set := {item | some item in p_items}
	every item in i_items {
		p_set[item]
	}
}

######################################################################
# Linux: namespaces as the policy lists them; masked and read-only paths at least the policy's.

allow_linux(p_linux, i_linux) if {
	{ns | some ns in i_linux.Namespaces} == {ns | some ns in p_linux.Namespaces}
	every path in p_linux.MaskedPaths {
		path in i_linux.MaskedPaths
	}
	every path in p_linux.ReadonlyPaths {
		path in i_linux.ReadonlyPaths
	}
	count(i_linux.Devices) == 0
	count(i_linux.Sysctl) == 0
	i_linux.RootfsPropagation in {"", "rprivate", "rslave"}
}

######################################################################
# Mounts and storages: each input one must match the one the policy container lists for its
# destination.

allow_mount(p_mount, i_mount, container_id) if {
	p_mount.type_ == i_mount.type_
	allow_source(p_mount.source, i_mount.source, container_id)
	{o | some o in p_mount.options} == {o | some o in i_mount.options}
}

allow_source(p_source, i_source, container_id) if {
	with_prefix := replace(p_source, "$(sfprefix)", policy_data.common.sfprefix)
	expanded := replace(replace(with_prefix, "$(cpath)", policy_data.common.cpath), "$(container-id)", container_id)
	regex.match(concat("", ["^", expanded, "$"]), i_source)
}

allow_storage(p_storages, i_storage) if {
	some p_storage in p_storages
	p_storage.driver == i_storage.driver
	p_storage.fstype == i_storage.fstype
	p_storage.driver_options == i_storage.driver_options
	regex.match(concat("", ["^", p_storage.mount_point, "$"]), i_storage.mount_point)
	regex.match(concat("", ["^", p_storage.source, "$"]), i_storage.source)
	{o | some o in p_storage.options} == {o | some o in i_storage.options}
}

######################################################################
# ExecProcessRequest: only the commands listed for the container the id was admitted as.

ExecProcessRequest if {
	p_index := data.pstate.containers[input.container_id]
	p_container := policy_data.containers[p_index]
	p_process := p_container.OCI.Process
	i_process := input.process
	print("ExecProcessRequest: container", p_container.name, "args", i_process.Args)

	some p_command in p_container.exec_commands
	p_command == i_process.Args

	input.string_user == null
	i_process.Terminal == false
	i_process.Capabilities == null
	i_process.Cwd == p_process.Cwd
	i_process.SelinuxLabel == ""
	i_process.ApparmorProfile == ""
	allow_user(p_process.User, i_process.User)
	every i_var in i_process.Env {
		allow_env_var(p_process.Env, i_var, data.pstate.sandbox_name)
	}
}

RemoveContainerRequest := {"ops": [{"op": "remove", "path": concat("/", ["/pstate/containers", input.container_id])}], "allowed": true} if {
	data.pstate.containers[input.container_id]
}

RemoveContainerRequest if {
	not data.pstate.containers[input.container_id]
}

######################################################################
# CreateSandboxRequest: no sandbox pid namespace, kernel modules or guest hooks.

CreateSandboxRequest if {
	input.sandbox_pidns == false
	count(input.kernel_modules) == 0
	input.guest_hook_path == ""
	every i_storage in input.storages {
		allow_storage(policy_data.sandbox.storages, i_storage)
	}
}

######################################################################
# CopyFileRequest: only files of the shared containers directory, below a "<sandbox id>-<hash>-"
# entry; no "." or ".." components; symlinks relative and staying below their directory.

CopyFileRequest if {
	print("CopyFileRequest: path", input.path, "type", input.file_type)
	allow_copy_path(input.path)
	allow_copy_type(input)
}

allow_copy_path(path) if {
	prefix := concat("", [policy_data.common.cpath, "/"])
	startswith(path, prefix)
	rest := substring(path, count(prefix), -1)
	regex.match(policy_data.common.copy_file_regex, rest)
	every part in split(rest, "/") {
		allow_path_part(part)
	}
}

# A helper, not "not" in the "every" body: rego-cpp drops a negation there.
allow_path_part(part) if {
	not part in {"", ".", ".."}
}

allow_copy_type(i) if {
	i.file_type in {"Regular", "Directory"}
}

allow_copy_type(i) if {
	i.file_type == "Symlink"
	relative := substring(i.path, count(policy_data.common.cpath) + 1, -1)
	contains(relative, "/")
	not startswith(i.symlink_target, "/")
	every part in split(i.symlink_target, "/") {
		part != ".."
	}
}

######################################################################
# Network: no loopback device or address, only the flags and states a CNI sets up.

UpdateInterfaceRequest if {
	i_interface := input.interface
	not i_interface.name in policy_data.network.forbidden_devices
	not i_interface.device in policy_data.network.forbidden_devices
	not regex.match("^(00:){5}00$", i_interface.hwAddr)
	bits.and(i_interface.raw_flags, bits.negate(policy_data.network.interface_flags)) == 0
	every ip in i_interface.IPAddresses {
		not_loopback(ip.address)
	}
}

UpdateRoutesRequest if {
	every route in input.routes.Routes {
		allow_route(route)
	}
}

allow_route(route) if {
	not route.device in policy_data.network.forbidden_devices
	not loopback(route.source)
	not loopback(route.gateway)
	not loopback(route.dest)
}

AddARPNeighborsRequest if {
	every neighbor in input.neighbors.ARPNeighbors {
		allow_neighbor(neighbor)
	}
}

allow_neighbor(neighbor) if {
	not neighbor.device in policy_data.network.forbidden_devices
	not loopback(neighbor.toIPAddress.address)
	neighbor.state in policy_data.network.neighbor_states
	bits.and(neighbor.flags, bits.negate(policy_data.network.neighbor_flags)) == 0
}

not_loopback(address) if {
	not loopback(address)
}

loopback(address) if {
	regex.match(`^127\.`, address)
}

loopback(address) if {
	regex.match(`^[0:]*:[0:]*1(/[0-9]+)?$`, address)
}

######################################################################
# The pod.

policy_data := {
	"common": {
		"cpath": "/run/kata-containers/shared/containers",
		"sfprefix": "$(cpath)/$(container-id)-[a-z0-9]{16}-",
		"root_paths": ["$(cpath)/$(container-id)/rootfs", "/tmp/kag-bench-[a-z0-9_]+/rootfs"],
		"container_id_regex": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
		"copy_file_regex": "^[a-f0-9]{64}-[a-f0-9]{16}-[^/]+(/[^/]+)*$",
		"ignored_annotation_prefixes": ["io.katacontainers.pkg.oci.", "io.kubernetes.cri.sandbox-"],
	},
	"sandbox": {
		"name_regex": "^bench$",
		"namespace": "default",
		"storages": [],
	},
	"network": {
		"forbidden_devices": ["lo"],
		"interface_flags": 128,
		"neighbor_states": [2, 128],
		"neighbor_flags": 136,
	},
	"request_defaults": {
		"ReadStreamRequest": true,
		"WriteStreamRequest": true,
		"SetPolicyRequest": false,
	},
	"containers": [
		pod_container("cycle", ["true"], []),
		pod_container("box", ["sleep", "[0-9]+"], [["echo", "x"], ["cat", "/etc/hostname"]]),
		pod_container("big", ["dd", "if=/dev/zero", "bs=[0-9]+K", "count=[0-9]+"], []),
	],
}

# Every container of the pod has the same spec apart from its name, command and execs.
pod_container(name, args, exec_commands) := {
	"name": name,
	"exec_commands": exec_commands,
	"storages": [],
	"OCI": {
		"Version": "1.1.0",
		"Root": {"Readonly": false},
		"Annotations": {
			"io.kubernetes.cri.container-name": name,
			"io.kubernetes.cri.container-type": "container",
		},
		"Process": {
			"Terminal": false,
			"Cwd": "/",
			"NoNewPrivileges": true,
			"User": {"UID": 0, "GID": 0, "AdditionalGids": [0]},
			"Args": args,
			"Env": [
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"HOSTNAME=$(sandbox-name)",
				"POD_NAME=$(sandbox-name)",
			],
			"Capabilities": {
				"Ambient": [],
				"Bounding": default_caps,
				"Effective": default_caps,
				"Inheritable": [],
				"Permitted": default_caps,
			},
		},
		"Linux": {
			"Namespaces": [{"Type": "ipc", "Path": ""}, {"Type": "uts", "Path": ""}, {"Type": "mount", "Path": ""}],
			"MaskedPaths": [
				"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
				"/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
			],
			"ReadonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
		},
		"Mounts": [
			{"destination": "/proc", "type_": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
			{"destination": "/dev", "type_": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
			{"destination": "/dev/pts", "type_": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
			{"destination": "/dev/shm", "type_": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
			{"destination": "/dev/mqueue", "type_": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
			{"destination": "/sys", "type_": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
			{"destination": "/etc/hosts", "type_": "bind", "source": "$(sfprefix)hosts", "options": ["rbind", "rprivate", "rw"]},
			{"destination": "/etc/resolv.conf", "type_": "bind", "source": "$(sfprefix)resolv.conf", "options": ["rbind", "rprivate", "rw"]},
		],
	},
}

default_caps := [
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
