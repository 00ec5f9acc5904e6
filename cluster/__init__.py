"""Running selfpose3d on Ray clusters: cloud VMs, Kubernetes, and a local cluster."""
