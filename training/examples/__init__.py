"""Example training configurations (TOML files; pass one with --config or TRAINING_CONFIG)."""
