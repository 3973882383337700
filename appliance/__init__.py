"""aicc.appliance."""
