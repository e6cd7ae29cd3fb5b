"""The TUI's screens, each with its .tcss beside it, and the store follower they share."""
