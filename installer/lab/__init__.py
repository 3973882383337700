"""Lab hosts: Debian 12 systemd-nspawn containers in network namespaces on this machine."""
