# kata-agent-py: guest image and VM.
#   make image     kernel + rootfs + initrd + disk image into build/ (cached by inputs);
#                  POLICY=1 [POLICY_FILE=x.rego] with the agent policy engine and default policy
#   make vm        boot the image under QEMU (foreground; Ctrl-C stops it); its agent at
#                  build/vm/agent.sock, any number of clients at once
#   make vm-start  boot it in the background (returns once the agent answers); make vm-stop
#   make test-vm   the VM test tier (tests/vm, marker vm)
#   make bench-boot  bench/boot.py
# See image-build/README.md for the Kata configuration.toml settings that use the outputs.

PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
BUILD ?= build
# A kernel you provide instead of Debian's linux-image-amd64: KERNEL=path/to/vmlinux
# (or a bzImage) and, if it has modules, KERNEL_MODULES=path/to/lib/modules/<release>.
KERNEL ?=
KERNEL_MODULES ?=
# GUEST_UVLOOP=1 ships uvloop in the guest; by default it is left out
# and the agent runs on asyncio's own loop (~2 MiB less RSS; see image-build/README.md).
export GUEST_UVLOOP
# POLICY=1 ships the agent policy engine (regopy; agent.policy) and a default policy at
# /etc/kata-opa/default-policy.rego: POLICY_FILE (default: allow-all, as Kata's images).
POLICY ?=
POLICY_FILE ?= rootfs/kata-opa/allow-all.rego
VM_ARGS ?=

KERNEL_FLAGS = $(if $(KERNEL),--kernel $(KERNEL)) $(if $(KERNEL_MODULES),--modules $(KERNEL_MODULES))
POLICY_FLAGS = $(if $(filter 1,$(POLICY)),--policy $(abspath $(POLICY_FILE)))

.PHONY: image initrd vm vm-start vm-stop test-vm bench-boot clean-image

image:
	$(PYTHON) image-build/build.py --out $(BUILD) $(KERNEL_FLAGS) $(POLICY_FLAGS)

initrd:
	$(PYTHON) image-build/build.py --out $(BUILD) --no-disk $(KERNEL_FLAGS) $(POLICY_FLAGS)

# The VM tools get absolute paths (virtiofsd chroots into the share; QEMU and vm.py may run
# from elsewhere), whatever BUILD is.
VM_DIRS = --build $(abspath $(BUILD)) --rundir $(abspath $(BUILD))/vm

vm: initrd
	$(PYTHON) image-build/vm.py run $(VM_DIRS) $(VM_ARGS)

vm-start: initrd
	$(PYTHON) image-build/vm.py start $(VM_DIRS) $(VM_ARGS)

vm-stop:
	$(PYTHON) image-build/vm.py stop $(VM_DIRS)

test-vm:
	$(PYTHON) -m pytest -m vm tests/vm

bench-boot: initrd
	$(PYTHON) bench/boot.py --build $(BUILD)

clean-image:
	rm -rf $(BUILD)/rootfs $(BUILD)/rootfs.json $(BUILD)/initrd.json $(BUILD)/disk.json \
	       $(BUILD)/kata-agent-py-*.img $(BUILD)/image.json $(BUILD)/vm
