"""Integration tests reuse the real-anvil fixtures of the anchoring suite."""

from tests.anchoring.conftest import anvil, owner  # pytest fixtures
