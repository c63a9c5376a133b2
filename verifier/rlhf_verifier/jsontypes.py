"""Type names for parsed JSON.

A bundle's records, evidence and bodies are untyped until checked: each member is read with
.get() and its type tested where it is used, so member values stay `Any` at this boundary.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JSONObject: TypeAlias = dict[str, Any]
