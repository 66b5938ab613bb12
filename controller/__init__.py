"""The controller: store, releases (deploys, rollout, supervisor), runtimes, commands, API, CLI."""
