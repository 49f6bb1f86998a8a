# Policy state across requests: CreateContainer records each container id with its command in
# data.pstate (through the ops of its answer); ExecProcess is allowed only in a recorded
# container, and only the command "echo" there; RemoveContainer forgets the container.

package agent_policy

import future.keywords.if
import future.keywords.in

default ExecProcessRequest := false

CreateContainerRequest := {"allowed": true, "ops": ops} if {
	not data.pstate.containers
	ops := [
		{"op": "add", "path": "/pstate/containers", "value": {}},
		record(input.container_id, input.OCI.Process.Args),
	]
}

CreateContainerRequest := {"allowed": true, "ops": [record(input.container_id, input.OCI.Process.Args)]} if {
	data.pstate.containers
	not data.pstate.containers[input.container_id]
}

record(id, args) := {"op": "add", "path": concat("/", ["/pstate/containers", id]), "value": args}

ExecProcessRequest if {
	data.pstate.containers[input.container_id]
	input.process.Args[0] == "echo"
}

RemoveContainerRequest := {"allowed": true, "ops": [{"op": "remove", "path": concat("/", ["/pstate/containers", input.container_id])}]} if {
	data.pstate.containers[input.container_id]
}

RemoveContainerRequest if {
	not data.pstate.containers[input.container_id]
}

default CreateSandboxRequest := true
default DestroySandboxRequest := true
default ReadStreamRequest := true
default SetPolicyRequest := true
default SignalProcessRequest := true
default StartContainerRequest := true
default WaitProcessRequest := true
default WriteStreamRequest := true
default CloseStdinRequest := true
