"""Prometheus metric families in the text exposition format (version 0.0.4), hand-rolled: a few
counters, gauges and one histogram do not justify a dependency. Shared by the server's request
metrics and the planning ledger; every family is an object its owner keeps, never module state."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        if by < 0:
            raise ValueError("counters only go up")
        self.values[labels] = self.values.get(labels, 0.0) + by

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def samples(self) -> Iterable[str]:
        if not self.label_names and not self.values:
            yield f"{self.name} 0"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(value)}"


class Gauge:
    """A value read when scraped (queue length, requests running), so it is never stale."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.name, self.help, self.read = name, help, read

    def samples(self) -> Iterable[str]:
        yield f"{self.name} {_number(self.read())}"


class Histogram:
    kind = "histogram"

    def __init__(
        self, name: str, help: str, buckets: Sequence[float], labels: Sequence[str] = ()
    ) -> None:
        self.name, self.help, self.label_names = name, help, tuple(labels)
        self.buckets = (*sorted(buckets), math.inf)
        self.counts: dict[LabelValues, list[int]] = {}
        self.sums: dict[LabelValues, float] = {}

    def observe(self, value: float, *labels: str) -> None:
        counts = self.counts.setdefault(labels, [0] * len(self.buckets))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value

    def samples(self) -> Iterable[str]:
        for labels, counts in sorted(self.counts.items()):
            for bound, count in zip(self.buckets, counts, strict=True):
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{_labels(self.label_names, labels, le)} {count}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {_number(self.sums[labels])}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {counts[-1]}"


def exposition(families: Iterable[Counter | Gauge | Histogram]) -> str:
    """Metric families in the text exposition format: HELP and TYPE lines, then the samples."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        lines.extend(family.samples())
    return "\n".join(lines) + "\n"
