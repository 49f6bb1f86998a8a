"""Guest root filesystem builder (Debian packages and PyPI wheels only); see rootfs/build.py."""
