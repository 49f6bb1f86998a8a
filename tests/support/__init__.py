"""Test helpers shared by all tiers (real agent processes, rootfs builders, ...)."""
