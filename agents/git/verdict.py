"""The landing gate's verdict on one landing, and the rule it applies: no new failure compared with the tip.

Its own module so the gate (which decides) and the landing queue (which batches decisions) share it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..tools.check import CheckResult

REFUSAL_TAIL = 2500


@dataclass(frozen=True)
class GateToken:
    """What the CAS may land: exactly ``tree`` (it passed on ``tip``), or anything when ``any_tip``."""

    tip: str
    tree: str | None
    any_tip: bool = False


@dataclass
class GateVerdict:
    """The gate's decision on landing one task head onto one tip."""

    ok: bool
    tip: str
    tip_tree: str
    tree: str | None = None
    reason: str = ""
    conflict: bool = False
    any_tip: bool = False
    new_failures: list[str] = field(default_factory=list)
    parse_errors: dict[str, str] = field(default_factory=dict)
    check: CheckResult | None = None
    tip_check: CheckResult | None = None
    tip_check_ran: bool = False
    duration_ms: float = 0.0

    def token(self) -> GateToken | None:
        return GateToken(self.tip, self.tree, self.any_tip) if self.ok else None

    def what_broke(self) -> str:
        """What broke, for the worker: the new failing tests, the files that no longer parse, the output."""
        lines = [self.reason]
        for path, why in list(self.parse_errors.items())[:10]:
            lines.append(f"- {path}: {why}")
        for name in self.new_failures[:15]:
            lines.append(f"- newly failing: {name}")
        if self.check is not None and not self.check.ok:
            lines.append(f"\nOutput of `{self.check.command}` on the merged tree (tail):")
            lines.append(self.check.output[-REFUSAL_TAIL:])
        return "\n".join(lines)


def compare(tip: CheckResult, merged: CheckResult) -> tuple[list[str], str]:
    """``(new failing ids, why it is worse)``; ``why`` is "" when the merged tree is not worse than the tip."""
    if merged.ok or merged.refused:
        return [], ""
    if tip.ok:
        named = sorted(merged.failing or [])
        return named, f"the check passes on the shared branch and fails with this change ({merged.summary()})"
    if merged.timed_out and not tip.timed_out:
        return [], "the check times out with this change (it finishes on the shared branch)"
    if tip.failing is not None and merged.failing is not None:
        new = sorted(merged.failing - tip.failing)
        if new:
            return new, f"{len(new)} test(s) fail with this change that pass on the shared branch"
        return [], ""
    if tip.failing is not None and merged.failing is None:
        return [], (
            f"the check fails without naming tests (exit code {merged.exit_code}) with this change; on the "
            f"shared branch only {len(tip.failing)} named test(s) fail"
        )
    return [], ""  # only exit statuses to compare, and both failed
