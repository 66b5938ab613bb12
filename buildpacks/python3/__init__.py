"""The python3 job type: Racetrack's `JobEntrypoint` convention."""

from buildpacks.python3.builder import Python3Buildpack

__all__ = ["Python3Buildpack"]
