"""The node agent: one per host, turns the VMs bound to it into libvirt domains and reports
the host. Does I/O."""
