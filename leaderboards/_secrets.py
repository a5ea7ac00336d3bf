"""Keeps secrets out of everything we store or publish: see `bridges.secrets` (shared with the bridges).

The store and the publisher pass every text they write through `redact`, which replaces the values
of secret-looking environment variables (and of any `api_key_env` a model spec names), bearer
tokens and `sk-...` keys.
"""

from __future__ import annotations

from bridges.secrets import MASK, MIN_SECRET_LENGTH, SECRET_NAME_PARTS, key_env_names, redact, secret_values

__all__ = ["MASK", "MIN_SECRET_LENGTH", "SECRET_NAME_PARTS", "key_env_names", "redact", "secret_values"]
