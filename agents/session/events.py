"""The event kinds every UI follows (rows of the ``events`` table, also published in-process).

Each event has ``kind``, ``session_id``, optional ``agent_id``/``task_id`` and a JSON ``data`` dict whose keys are
listed here. UIs rebuild their state from these plus the tables they point at.
"""

SESSION_STARTED = "session_started"  # goal, repo, branch, workers, sandbox, check
SESSION_ENDED = "session_ended"  # status (done|stopped|failed), reason
CYCLE_STARTED = "cycle_started"  # cycle_id, number, reason (start|continue|fresh|resume)
CYCLE_ENDED = "cycle_ended"  # cycle_id, number, status
TASK_CREATED = "task_created"  # title, kind, parent_id, depth, cycle_id
TASK_STARTED = "task_started"  # title, kind, attempt
TASK_ENDED = "task_ended"  # status (done|failed|cancelled), error, summary
AGENT_STARTED = "agent_started"  # role, name, model, task_id
AGENT_STEP = (
    "agent_step"  # step, action, target (path or command), observation (first 300 chars), exit_code, error
)
AGENT_ENDED = "agent_ended"  # status, steps, prompt_tokens, completion_tokens
LLM_CALL = "llm_call"  # role, prompt_tokens, completion_tokens, latency_ms, error
PLAN = "plan"  # tasks (titles), subplanners (titles), scratchpad (first 500 chars)
COMMIT_LANDED = "commit_landed"  # sha, integrated_sha, retries, conflicts, refusals, gate_ms, title
CONFLICT = "conflict"  # paths, round
GATE = "gate"  # verdict (passed|refused), reason, new_failures, parse_errors, check_ms, duration_ms
VERDICT = "verdict"  # cycle_id, number, decision, reason, notes
CONTROL = "control"  # control (pause|resume|fresh|stop|steer|workers), value, source
STATUS = "status"  # paused, workers, message — engine state changes worth showing
WARNING = "warning"  # message
