"""kata-agent-py's host side: boot the guest image under QEMU and serve its agent channel.

* ``hv.vm``      one guest under QEMU (and virtiofsd): command line, start, health probe, stop
* ``hv.image``   the built image (``build/image.json``) and its paths
* ``hv.shared``  the sandbox's shared directory as the Kata runtime mounts it in the guest
* ``hv.mux``     the ttrpc multiplexer: many clients onto the guest's one virtio-serial channel
* ``hv.guest``   a running guest = a ``Vm`` + its multiplexer, started and stopped as one
* ``hv.service`` + ``hv.cli``  ``kata-agent-hv``, Kata's remote hypervisor service

``image-build/vm.py`` (``make vm``) is a command line over ``hv.guest``.
"""
