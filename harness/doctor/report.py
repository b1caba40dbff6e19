"""The doctor's findings: one line per check, PASS / WARN / FAIL / SKIP, with what to do."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("pass", "warn", "fail", "skip")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # one of STATUSES
    message: str  # what was measured
    advice: str = ""  # what to do about a warning or failure

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, got {self.status!r}")


def judged(name: str, message: str, fail: str = "", warn: str = "") -> Check:
    """FAIL with the advice `fail` when it is given, else WARN with `warn`, else PASS."""
    if fail:
        return Check(name, "fail", message, fail)
    if warn:
        return Check(name, "warn", message, warn)
    return Check(name, "pass", message)


@dataclass
class DoctorReport:
    subject: str  # the checkpoint, data and env examined
    checks: list[Check] = field(default_factory=list)

    def add(self, *checks: Check) -> None:
        self.checks.extend(checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def render(self) -> str:
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [f"doctor: {self.subject}"]
        for c in self.checks:
            lines.append(f"{c.status.upper():<4}  {c.name:<{width}}  {c.message}")
            if c.advice:
                lines.append(f"{'':<4}  {'':<{width}}  -> {c.advice}")
        counts = {s: sum(c.status == s for c in self.checks) for s in STATUSES}
        lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n)
                     + (": FAILED" if self.failed else ": ok"))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "failed": len(self.failed), "checks": [asdict(c) for c in self.checks]}
