"""Bounds on learned values (``learn mu per layer in (0, 2 / lipschitz(x))``): one table entry per
bound form.

A bounded value is learned through an unconstrained raw tensor and a map into the bounds whose
start is exactly the classical value, so an untrained network is still the classical iteration.
The map of each form is a class of ``runtime_torch`` (copied into the generated module), whose
docstring gives the formula; this table says which class realises which form.

An open side is enforced by a smooth map (sigmoid, softplus): the value can approach the bound
but never reach it, so a start on an open bound is refused. A closed side is enforced by clamping
(the raw value *is* the value inside the bounds): a start on the bound is kept exactly — a
threshold ``>= 0`` that starts at 0 stays an exact soft-threshold of zero — and the gradient
with respect to the raw value is one inside, zero past the closed side.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BoundForm:
    """How one form of bound is realised: the runtime_torch class mapping a raw tensor into it."""

    key: str
    helper: str  # the runtime_torch class: value(raw, low, high) and start(value, low, high)
    has_low: bool
    has_high: bool
    low_closed: bool
    high_closed: bool

    def notation(self, low: str | None, high: str | None) -> str:
        """``(0, 2/L)``, ``[0, 1)``, ``>= 0``: how the bound is written."""
        if self.has_low and self.has_high:
            return f"{'[' if self.low_closed else '('}{low}, {high}{']' if self.high_closed else ')'}"
        if self.has_low:
            return f"{'>=' if self.low_closed else '>'} {low}"
        return f"{'<=' if self.high_closed else '<'} {high}"


BOUND_FORMS: dict[str, BoundForm] = {
    form.key: form
    for form in (
        BoundForm("open_interval", "OpenInterval", True, True, False, False),
        BoundForm("closed_interval", "ClosedInterval", True, True, True, True),
        BoundForm("low_closed_interval", "LowClosedInterval", True, True, True, False),
        BoundForm("high_closed_interval", "HighClosedInterval", True, True, False, True),
        BoundForm("above", "Above", True, False, False, False),
        BoundForm("at_least", "AtLeast", True, False, True, False),
        BoundForm("below", "Below", False, True, False, False),
        BoundForm("at_most", "AtMost", False, True, False, True),
    )
}


def bound_form(has_low: bool, has_high: bool, low_closed: bool, high_closed: bool) -> BoundForm:
    """The table entry of a bound with these sides."""
    for form in BOUND_FORMS.values():
        if (form.has_low, form.has_high, form.low_closed, form.high_closed) == (
            has_low,
            has_high,
            low_closed and has_low,
            high_closed and has_high,
        ):
            return form
    raise KeyError((has_low, has_high, low_closed, high_closed))
