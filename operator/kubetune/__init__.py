"""kubetune: a Kubernetes operator that keeps workloads and nodes performing well."""

__version__ = "0.1.0"
