"""The agents' roles: planner, worker, judge; how they ask a model, the reply schemas, the prompt templates."""
