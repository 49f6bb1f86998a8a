"""kata-agent-py's host side: boot the guest image under QEMU and serve its agent channel.

* ``hv.vm``      one guest under QEMU (and virtiofsd): the image of ``make image``, the command
                 line, start, health probe, stop
* ``hv.shared``  the sandbox's shared directory as the Kata runtime mounts it in the guest
* ``hv.mux``     the ttrpc multiplexer: many clients onto the guest's one virtio-serial channel
* ``hv.guest``   a running guest = a ``Vm`` + its multiplexer, started and stopped as one
* ``hv.config``, ``hv.service``, ``hv.servicer``, ``hv.cli``  ``kata-agent-hv``, Kata's remote
                 hypervisor service (``configuration-remote.toml``: a Kata configuration for it)

``image-build/vm.py`` (``make vm``) is a command line over ``hv.guest``.
"""
