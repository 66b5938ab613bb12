"""Buildpacks: the `job.yaml` schema and one package per job type that builds artifacts."""
