"""formicary: run many coding agents at once on one git repository.

Recursive planners split a goal into tasks, concurrent workers each own one task in its own git worktree and
land it on one shared branch, and a judge decides at the end of each cycle whether to go on.
"""

__version__ = "0.1.0"
