"""OpenCompass: `bridge` writes and runs its configs; `model` runs inside OpenCompass's processes."""
