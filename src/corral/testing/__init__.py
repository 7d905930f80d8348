"""Fakes for users' tests and ours: a fake OpenAI upstream, tiny random HF models."""

from corral.testing.fake_upstream import FakeUpstream
from corral.testing.tiny_models import make_tiny_model

__all__ = ["FakeUpstream", "make_tiny_model"]
