"""Prometheus metrics of the service: named counters any slice can increment, and the scrape.

Example:
    >>> from bastion.service import metrics
    >>> metrics.ERROR_REPORTS_INGESTED.labels(status="accepted").inc()
    >>> metrics.ROLLOUT_HALTS.labels(reason=metrics.bounded_label("crash_rate")).inc()

Every label value is from a bounded set: route *templates* (never raw paths),
HTTP status codes, error codes, a few fixed kinds. No label ever carries a
device id, a tenant id, a token or any other per-entity value, so the series
count stays bounded however large the fleet (ADR 0019).

Multi-worker: ``bastion service run`` sets ``PROMETHEUS_MULTIPROC_DIR`` to
``<BASTION_HOME>/metrics`` (emptied at start) before any worker imports this
module; prometheus-client then keeps each worker's values in a file there, and
:func:`render` sums them at scrape, so the count is the service's, not one
worker's. Without the variable (tests, one in-process app) the values live in
the process's default registry.

Declaring the metrics registers them with prometheus-client's registry when
the module is first imported; that is the library's model, and nothing else
happens at import (no thread, no socket, no file outside the multiprocess dir).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from bastion.service.metrics_dir import MULTIPROC_ENV, prepare_multiprocess_dir

__all__ = [
    "ATTESTATIONS",
    "CERTIFICATES_ISSUED",
    "CHECKINS",
    "CONTENT_TYPE",
    "ERROR_REPORTS_INGESTED",
    "ERROR_REPORT_GROUP_SIZE",
    "ERROR_REPORT_RECORDS",
    "HTTP_LATENCY_BUCKETS",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_SECONDS",
    "MAX_LABEL_CHARS",
    "MULTIPROC_ENV",
    "PERIODIC_RUNS",
    "ROLLOUT_HALTS",
    "ROLLOUT_STAGE_CHANGES",
    "bounded_label",
    "prepare_multiprocess_dir",
    "render",
    "utc_age_seconds",
]

#: Bound on one label value (a code or kind); longer or odd values become ``other``.
MAX_LABEL_CHARS = 48
#: Latency buckets (seconds): the attestation hot path sits in the low milliseconds.
HTTP_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The text format's media type.
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LABEL_RE = re.compile(rf"[a-z0-9_]{{1,{MAX_LABEL_CHARS}}}")

HTTP_REQUESTS = Counter(
    "bastion_http_requests_total", "HTTP requests served, by route template, method and status.",
    ["route", "method", "status"],
)  # fmt: skip
HTTP_REQUEST_SECONDS = Histogram(
    "bastion_http_request_duration_seconds", "Time to serve a request, by route template and method.",
    ["route", "method"], buckets=HTTP_LATENCY_BUCKETS,
)  # fmt: skip
ATTESTATIONS = Counter(
    "bastion_attestations_total", "Attestations, by result (ok, refused) and refusal reason (its error code).",
    ["result", "reason"],
)  # fmt: skip
CERTIFICATES_ISSUED = Counter("bastion_certificates_issued_total", "Device certificates issued by attestation.")
CHECKINS = Counter(
    "bastion_checkins_total", "Device check-ins: TUF timestamp fetches, status reports.",
    ["kind"],
)  # fmt: skip
ERROR_REPORTS_INGESTED = Counter(
    "bastion_error_report_batches_total", "Error-report batches, by outcome (accepted, duplicate, refused, busy).",
    ["status"],
)  # fmt: skip
ERROR_REPORT_RECORDS = Counter("bastion_error_report_records_total", "Error records stored from accepted batches.")
ERROR_REPORT_GROUP_SIZE = Histogram(
    "bastion_error_report_group_size", "Error-report batches checked and stored together (one transaction).",
    buckets=(1, 2, 4, 8),
)  # fmt: skip
ROLLOUT_STAGE_CHANGES = Counter(
    "bastion_rollout_stage_changes_total", "Staged-rollout stage changes, by kind (deployment, os).", ["kind"]
)
PERIODIC_RUNS = Counter(
    "bastion_periodic_runs_total",
    "Passes of the service's periodic tasks, by task and outcome (ok, error).",
    ["task", "outcome"],
)
ROLLOUT_HALTS = Counter(
    "bastion_rollout_halts_total", "Staged rollouts halted, by kind (deployment, os) and reason.", ["kind", "reason"]
)


def bounded_label(value: str) -> str:
    """``value`` if it is a short ``[a-z0-9_]`` code, else ``other``: a label never grows the series set."""
    return value if _LABEL_RE.fullmatch(value) else "other"


class _ScrapeGauges(Collector):
    """Gauges computed when scraped (e.g. TUF metadata age), from a callable returning (name, help, value)."""

    def __init__(self, source: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        for name, text, value in self._source():
            yield GaugeMetricFamily(name, text, value=value)


def render(scrape_gauges: Callable[[], Iterable[tuple[str, str, float]]] | None = None) -> bytes:
    """The text exposition of every metric: all workers' values in multiprocess mode, plus scrape-time gauges."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]  # untyped upstream
        out = generate_latest(registry)
    else:
        out = generate_latest(REGISTRY)
    if scrape_gauges is not None:
        extra = CollectorRegistry()
        extra.register(_ScrapeGauges(scrape_gauges))
        out += generate_latest(extra)
    return out


def utc_age_seconds(mtime: float, now: dt.datetime) -> float:
    """Seconds from ``mtime`` (a POSIX time) to ``now``, never negative."""
    return max(0.0, now.timestamp() - mtime)
