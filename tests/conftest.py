"""Suite-wide settings: Hypothesis without wall-clock deadlines (CI machines are noisy)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ci")
