"""The SSH front door: asyncssh server, exec command parsing, git over dulwich, bare repos."""
