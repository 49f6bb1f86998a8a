"""The fuzz tier: hypothesis property tests bounded for CI (the ``ci`` profile, about two
minutes for the tier on the reference machine); ``HYPOTHESIS_PROFILE=long`` runs many more
examples. The on-demand million-input run is ``python -m tests.fuzz.long_run`` (atheris)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=False,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=20000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
