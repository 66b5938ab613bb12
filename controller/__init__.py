"""The controller: store, releases, deployer, runtimes, admin commands, API and CLI."""
