"""Git for the engine: the one way to start git, the session's workspace, landing on the shared branch, the repo map."""
