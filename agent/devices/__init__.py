"""Devices: the uevent listener, PCI path resolution and the CreateContainer device handlers.

`UeventListener` (started with the agent) remembers the devices it has seen and wakes waiters;
`DeviceLookup` turns Kata's device references (PCI paths, /dev names, SCSI addresses) into guest
/dev nodes; `DeviceManager` rewrites a container's spec for the devices the host passed.
"""
