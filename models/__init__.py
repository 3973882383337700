"""aicc.models."""
