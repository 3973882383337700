"""Ansible roles shipped as package data (no Python here)."""
