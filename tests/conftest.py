"""Shared test setup: Hypothesis profiles.

``fast`` runs under ``make test``; ``soak`` (``make soak``) runs many more examples.  A
failure either profile finds is pinned with ``@example`` in the test that found it.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fast", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "soak", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
