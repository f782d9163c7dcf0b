"""Whether a diagnostic's number can be trusted: the one structure every evaluation carries.

A number is shown bare only when the diagnostic passed its controls at the budget that made it
(real vs real read as indistinguishable, known defects such as blur σ = 1 px and the wrong protein
detected). Otherwise it is marked, everywhere it appears (CLI text, CSV ``# UNTRUSTED`` line, JSON
``trust`` object, figure titles, Diagnostics), with the reason and the budget that would be needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

CALIBRATED = "calibrated"  # passed its controls at this budget
NOT_CALIBRATED = "not calibrated"  # no controls were run at this budget
FAILED = "failed controls"  # controls were run and this diagnostic failed them
STATUSES = (CALIBRATED, NOT_CALIBRATED, FAILED)


@dataclass(frozen=True)
class Trust:
    """``status`` (one of :data:`STATUSES`), ``reason`` (which control passed or failed, or why none
    ran), ``needed`` (what budget would make the number trustworthy; empty when trusted) and
    ``controls`` (control name -> short answer, e.g. ``{"real vs real": "p=0.41, indistinguishable"}``)."""

    status: str
    reason: str = ""
    needed: str = ""
    controls: dict | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown trust status '{self.status}'; one of {STATUSES}")

    @property
    def trusted(self) -> bool:
        return self.status == CALIBRATED

    def line(self) -> str:
        """One line for the CLI, the widget and the CSV's ``#`` header."""
        if self.trusted:
            return f"TRUSTED (calibrated: {self.reason})" if self.reason else "TRUSTED (calibrated)"
        text = f"UNTRUSTED ({self.status}): {self.reason}" if self.reason else f"UNTRUSTED ({self.status})"
        return f"{text}; needs {self.needed}" if self.needed else text

    def short(self) -> str:
        """A few words for figure titles and table cells."""
        return "calibrated" if self.trusted else f"UNTRUSTED: {self.status}"

    def as_dict(self) -> dict:
        return {"trusted": self.trusted, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "Trust":
        return cls(data["status"], data.get("reason", ""), data.get("needed", ""), data.get("controls"))


def untrusted(reason: str, needed: str = "", controls: dict | None = None) -> Trust:
    """Controls were run and failed."""
    return Trust(FAILED, reason, needed, controls)


def uncalibrated(reason: str, needed: str = "") -> Trust:
    """No controls at this budget."""
    return Trust(NOT_CALIBRATED, reason, needed)


def weakest(*trusts: Trust) -> Trust:
    """The least trustworthy of several (failed < not calibrated < calibrated): a result made of parts."""
    order = {FAILED: 0, NOT_CALIBRATED: 1, CALIBRATED: 2}
    return min(trusts, key=lambda t: order[t.status])
