"""What a push's output says about the parts of a Racetrack manifest that a push ignores or
replaces: `git.remote`/`git.branch`, and the secret env files, which in Racetrack stay on the
client's side (absent from the commit: their values are set with `config:set`; committed: they
are used, with a warning). The notes never contain a value.
"""

from __future__ import annotations

from buildpacks.source import JobSource

GIT_NOTE = "Note: git.remote and git.branch are ignored: a push deploys the pushed commit"


def push_notes(source: JobSource, job: str, ssh_command: str) -> list[str]:
    """One line per note, in the order they apply: git section, build file, runtime file.
    `ssh_command` is how the pusher reaches the commands (`ssh -p PORT git@HOST`)."""
    manifest = source.manifest
    lines: list[str] = []
    if manifest.git is not None and (manifest.git.remote or manifest.git.branch):
        lines.append(GIT_NOTE)
    lines += _secret_file_note(
        "secret_build_env_file",
        manifest.secret_build_env_file,
        source.secret_build_env,
        f"{ssh_command} config:set --build {job} KEY=VALUE...",
    )
    lines += _secret_file_note(
        "secret_runtime_env_file",
        manifest.secret_runtime_env_file,
        source.secret_runtime_env,
        f"{ssh_command} config:set {job} KEY=VALUE...",
    )
    return lines


def _secret_file_note(
    field: str, path: str | None, values: dict[str, str] | None, command: str
) -> list[str]:
    if path is None:
        return []
    if values is None:
        return [
            f"Note: {field} {path!r} is not in the pushed commit; set its values with: {command}"
        ]
    return [
        f"Warning: {field} {path!r} is committed to git, and so are its secrets; keep it out of"
        f" the repository and set them with: {command}"
    ]
