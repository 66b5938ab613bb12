"""Racetrack's python3 job wrapper: serves a `JobEntrypoint` class over HTTP.

It runs inside the job's own virtual environment and uses only the standard library, so a job
may pin any version of any package without clashing with the wrapper.
"""
