import pytest

from gitreceiver.commands import AdminCommand, CommandError, GitCommand, parse_exec_command


@pytest.mark.parametrize("path", ["'adder'", "'/adder'", "'adder.git'", "'/adder.git'", "adder"])
def test_git_repo_paths(path):
    assert parse_exec_command(f"git-receive-pack {path}") == GitCommand("git-receive-pack", "adder")
    assert parse_exec_command(f"git-upload-pack {path}") == GitCommand("git-upload-pack", "adder")


@pytest.mark.parametrize(
    "name", ["my_fantabulous_skynet_AI", "Adder", "adder.v2", "9lives", "a", "A" * 63, "x-y_z.w"]
)
def test_racetracks_job_names_are_repositories(name):
    assert parse_exec_command(f"git-receive-pack '/{name}.git'") == GitCommand(
        "git-receive-pack", name
    )


@pytest.mark.parametrize(
    "path",
    [
        "'../x'",
        "'/etc/passwd'",
        "'a..b'",
        "'..'",
        "'.hidden'",
        "'_x'",
        "'x.git.git'",
        "'a b'",
        "'a$(id)'",
        "'-rf'",
        "'a;b'",
        "'" + "a" * 64 + "'",
        "''",
        "'a/b'",
        "'adder\n'",
    ],
)
def test_bad_repo_names_are_refused(path):
    with pytest.raises(CommandError, match="is not a job repository"):
        parse_exec_command(f"git-receive-pack {path}")


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("git-receive-pack", "exactly one repository argument"),
        ("git-receive-pack 'a' 'b'", "exactly one repository argument"),
        ("git-upload-archive 'adder'", "is not supported"),
        ("jobs:list 'unclosed", "cannot parse the command"),
        ("", "empty command"),
        ("help\0", "NUL byte"),
    ],
)
def test_malformed_commands(command, message):
    with pytest.raises(CommandError, match=message):
        parse_exec_command(command)


def test_admin_command_words():
    assert parse_exec_command("jobs:list --json") == AdminCommand(("jobs:list", "--json"))
    assert parse_exec_command("config:set adder 'A=b c'") == AdminCommand(
        ("config:set", "adder", "A=b c")
    )
