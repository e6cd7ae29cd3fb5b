"""The only code that knows a session's whole flow: the engine's control API, the cycle loop, controls, events, state."""
