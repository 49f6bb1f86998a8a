# GuestDetails is answered by two complete rules with different values for the same input: the
# evaluation fails ("complete rules must not produce multiple outputs"), which denies the request.
# Everything else allowed.

package agent_policy

import future.keywords.if

GuestDetailsRequest := true if {
	input.mem_block_size == input.mem_block_size
}

GuestDetailsRequest := false if {
	input.mem_hotplug_probe == input.mem_hotplug_probe
}

default CreateSandboxRequest := true
default SetPolicyRequest := true
default GetMetricsRequest := true
