"""Nothing to register (import-only stub)."""
