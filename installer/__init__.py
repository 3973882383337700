"""aicc installer: CLI, site settings, inventory, preflight, Ansible runner, lab hosts."""
