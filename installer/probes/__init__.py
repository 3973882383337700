"""Stdlib-only scripts run on site hosts with their system python3 (sent over SSH, not installed)."""
