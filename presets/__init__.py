"""Preset YAML files, installed as the package ``nuimcli._presets`` (see pyproject.toml)."""
