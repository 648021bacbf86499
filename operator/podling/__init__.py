"""podling: a Kubernetes-compatible container orchestrator driven by git."""

__version__ = "0.1.0"
