"""Admin commands (`ssh -p 2222 git@HOST <command>`), the same operations the API offers.

Importing the package registers every command.
"""

from controller.commands import jobs, releases
from controller.commands.registry import COMMANDS, CommandFailed, run_command

__all__ = ["COMMANDS", "CommandFailed", "jobs", "releases", "run_command"]
