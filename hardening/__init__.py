"""aicc.hardening: the controls catalog, evidence from the hosts, and the signed compliance report."""
