"""Compliance rule sets: named, versioned, each rule a small function over collected facts."""

from .collect import Collector
from .rules import LATEST, RULE_SETS, RuleResult, evaluate, resolve

__all__ = ["Collector", "LATEST", "RULE_SETS", "RuleResult", "evaluate", "resolve"]
