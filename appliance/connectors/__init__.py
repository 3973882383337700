"""Connectors: the business systems the voice bot acts on, behind one small interface."""
