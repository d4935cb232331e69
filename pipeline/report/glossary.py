"""What each photo metric means in plain language, how it is written, and which way is better.

The metric names are those of docs/metrics.md; a metric this table does not know is still shown, under
its own name, without a caption or a judgement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.report.wording import MISSING, as_number, fmt_int, fmt_num, fmt_pct, fmt_points, fmt_signed

__all__ = ["MetricSpec", "METRICS", "ORDER", "WITHIN_NOISE", "spec_for", "metric_row", "judge", "ordered_names"]

Kind = Literal["fraction", "count", "number"]
Better = Literal["up", "down"] | None


@dataclass(frozen=True)
class MetricSpec:
    """``label``: the name a client reads; ``caption``: one sentence on what it means;
    ``better``: which direction of change is an improvement (None: neither, it depends);
    ``tolerance``: changes smaller than this read as "about the same"."""

    name: str
    label: str
    caption: str
    kind: Kind = "number"
    unit: str = ""
    digits: int = 2
    better: Better = None
    tolerance: float = 0.0

    def value(self, v: Any) -> str:
        if self.kind == "fraction":
            return fmt_pct(v)
        if self.kind == "count":
            return fmt_int(v)
        return fmt_num(v, self.digits, self.unit)

    def change(self, d: Any) -> str:
        if self.kind == "fraction":
            return fmt_points(d)
        if self.kind == "count":
            f = as_number(d)
            return MISSING if f is None else fmt_signed(f, 0)
        return fmt_signed(d, self.digits, self.unit)


METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec(
            "show_through",
            "Show-through",
            "Share of the treated area where bare skin shows at normal viewing distance. "
            "Lower means the scalp looks more covered.",
            kind="fraction",
            better="down",
            tolerance=0.005,
        ),
        MetricSpec(
            "dot_count",
            "Dots found",
            "Number of pigment dots found in the measured area of the photo. It depends on how much "
            "scalp the photo frames: dot density compares two photos.",
            kind="count",
        ),
        MetricSpec(
            "dot_density_per_cm2",
            "Dot density",
            "Dots per square centimetre of scalp. Needs a scale (the calibration card).",
            unit="per cm\u00b2",
            digits=1,
            better="up",
            tolerance=0.05,
        ),
        MetricSpec(
            "scalp_fraction",
            "Visible scalp",
            "Share of the measured area that is skin rather than hair (dots count as skin). "
            "It changes with hair length and growth as much as with the treatment.",
            kind="fraction",
            tolerance=0.005,
        ),
        MetricSpec(
            "dot_diameter_mm_median",
            "Dot size",
            "Typical (median) dot diameter. Healed SMP dots are about 0.10\u20130.25 mm.",
            unit="mm",
            digits=2,
            tolerance=0.005,
        ),
        MetricSpec(
            "nn_distance_mm_median",
            "Dot spacing",
            "Typical (median) distance from a dot to its nearest neighbour.",
            unit="mm",
            digits=2,
            tolerance=0.005,
        ),
        MetricSpec(
            "spacing_cv",
            "Spacing evenness",
            "Variation of the dot spacing (0 is perfectly even). Lower means a more even pattern.",
            digits=2,
            better="down",
            tolerance=0.005,
        ),
        MetricSpec(
            "clark_evans_r",
            "Pattern (Clark\u2013Evans R)",
            "About 1 is a natural, random-looking pattern; below 1 dots cluster; well above 1 "
            "they sit in a regular grid.",
            digits=2,
            tolerance=0.005,
        ),
        MetricSpec(
            "blue_shift_fraction",
            "Blue-shifted dots",
            "Share of dots whose pigment looks bluer than a neutral dark pigment on this skin "
            "(a cool cast clients notice).",
            kind="fraction",
            better="down",
            tolerance=0.0005,
        ),
        MetricSpec(
            "faded_fraction",
            "Faded dots",
            "Share of dots too light to read as a hair follicle at conversational distance.",
            kind="fraction",
            better="down",
            tolerance=0.0005,
        ),
        MetricSpec(
            "spread_fraction",
            "Spread dots",
            "Share of dots that have blurred into blotches (\u201cblow-outs\u201d) instead of reading as follicles.",
            kind="fraction",
            better="down",
            tolerance=0.0005,
        ),
        MetricSpec(
            "dots_not_measurable",
            "Dots too small to judge",
            "Dots found but too small in this photo to judge their colour, fading or spread; they are not "
            "flagged and not in the shares above.",
            kind="count",
        ),
    )
}

#: Order of the rows in every table: the figures a clinic reads first come first.
ORDER = tuple(METRICS)


def spec_for(name: str) -> MetricSpec:
    return METRICS.get(name) or MetricSpec(name, name.replace("_", " "), "", digits=3)


#: What a change within the measurement's noise is called (comparison.json ``metrics[name].noise``).
WITHIN_NOISE = "within what two photos of one scalp differ by"


def judge(spec: MetricSpec, delta: Any, noise: Any = None) -> str:
    """``better``, ``worse``, ``same`` (within tolerance), ``unsure`` (within ``noise``: the change two
    photos of one scalp can show with nothing changed), ``changed`` (no better direction) or
    ``unknown`` (no delta)."""
    d = as_number(delta)
    if d is None:
        return "unknown"
    if abs(d) <= spec.tolerance:
        return "same"
    n = as_number(noise)
    if n is not None and abs(d) <= n:
        return "unsure"
    if spec.better is None:
        return "changed"
    return "better" if (d > 0) == (spec.better == "up") else "worse"


def metric_row(
    name: str, value: Any = None, before: Any = None, after: Any = None, delta: Any = None, noise: Any = None
) -> dict[str, Any]:
    """Display strings of one table row (a single value, or before / after / change); ``noise``: the
    change the metric must exceed to be judged (:func:`judge`)."""
    spec = spec_for(name)
    verdict = judge(spec, delta, noise)
    d = as_number(delta)
    arrow = "" if d is None else ("=" if verdict == "same" else ("\u25b2" if d > 0 else "\u25bc"))
    words = {
        "better": "better",
        "worse": "worse",
        "same": "about the same",
        "unsure": WITHIN_NOISE,
        "changed": "",
        "unknown": "",
    }[verdict]
    return {
        "name": name,
        "label": spec.label,
        "caption": spec.caption,
        "value": spec.value(value),
        "before": spec.value(before),
        "after": spec.value(after),
        "change": spec.change(delta),
        "verdict": verdict,
        "arrow": arrow,
        "verdict_words": words,
    }


def ordered_names(names: list[str] | Any) -> list[str]:
    """Known metrics in :data:`ORDER`, then any others in their own order."""
    names = list(names)
    return [n for n in ORDER if n in names] + [n for n in names if n not in METRICS]
