"""A worker's hands: its actions, confined file access, and the sandbox its commands run in."""
