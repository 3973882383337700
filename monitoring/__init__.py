"""aicc.monitoring."""
