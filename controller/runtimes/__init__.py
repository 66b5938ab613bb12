"""Runtimes start and stop a release's instances: local processes, Docker, Kubernetes."""
