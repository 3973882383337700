"""aicc.hardening."""
