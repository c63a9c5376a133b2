"""Compliance rule sets: named, versioned, each rule a small function over collected facts."""

from .collect import Collector
from .rules import RULE_SETS, RuleResult, evaluate

__all__ = ["Collector", "RULE_SETS", "RuleResult", "evaluate"]
