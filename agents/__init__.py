"""The engine: scheduler, planners, workers, judge, model client, git workspaces, actions. Never imports Textual."""
