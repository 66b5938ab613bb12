"""Logging for jobs and the wrapper, under the module names Racetrack jobs import."""
