"""Packaged default configurations (installed as hamacho.configs)."""
