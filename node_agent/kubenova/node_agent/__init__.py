"""The node agent: one per host, turns the VMs bound to it into libvirt domains and reports
the host. Does I/O, except the modules that say they are pure:

- `hypervisor` — the small interface to a hypervisor and the facts it reports (pure types);
- `domain_xml` — VM → libvirt domain XML, built with ElementTree (pure);
- `decide` — what to do with a domain given its VM, and which phase to report (pure);
- `hostfacts` — parsing libvirt's capability and node-device XML (pure);
- `queueing` — a de-duplicating work queue (asyncio, no I/O).

The I/O lives in `libvirt_driver` (the only module importing libvirt), `storage` (qemu-img,
seed images), `kubeapi` (the Kubernetes calls), `reconcile`, `heartbeat`, `agent` and
`simulate`.
"""

VERSION = "0.1.0"
