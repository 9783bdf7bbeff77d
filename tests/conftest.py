"""Suite-wide settings: the devnet fixtures, Hypothesis without wall-clock deadlines."""

from hypothesis import HealthCheck, settings

pytest_plugins = ["karma_analytics.devnet.pytest_plugin"]

settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("ci")
