"""Admin commands (`ssh -p 2222 git@HOST <command>`) and the same operations over HTTP.

Importing the package registers every command.
"""

from controller.commands import access, config, endpoints, jobs, people, releases
from controller.commands.registry import COMMANDS, CommandFailed, run_api_command, run_command

__all__ = [
    "COMMANDS",
    "CommandFailed",
    "access",
    "config",
    "endpoints",
    "jobs",
    "people",
    "releases",
    "run_api_command",
    "run_command",
]
