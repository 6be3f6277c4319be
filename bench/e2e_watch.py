"""What ``bench.e2e`` watches while it runs: notifications, their webhooks, the processes.

* ``Inbox`` reads the sink's file (``bench.e2e_sink``) as it grows;
* ``Matcher`` pairs each completion webhook with the webhooks it covers (FIFO per
  connection, see ``bench.e2e``) and keeps the latencies per phase;
* ``ProcessWatch`` samples the peak RSS of every process of the deployment (gunicorn master
  and each worker, Celery parent and each child, beat) and their CPU time.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from bench.e2e_sink import Note, parse_line

__all__ = ["Inbox", "Matcher", "ProcessWatch", "percentile"]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(len(ordered) * fraction))) - 1]


class Inbox:
    """The notifications the sink received, read incrementally from its file.

    ``notes`` keeps the successful ``WEBHOOK`` notifications in the order received (each
    ``webhook-id`` once); ``covered`` is the sum of their ``added + updated``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._partial = b""
        self._ids: set[str] = set()
        self.notes: list[Note] = []
        self.covered = 0
        self.failures: list[Note] = []
        #: Notifications of other sync types (polls), ignored.
        self.other_types: Counter[str] = Counter()
        #: The same ``webhook-id`` received again (an at-least-once retry).
        self.duplicates = 0
        self.bad_signatures = 0

    def poll(self) -> None:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 - kept open while it grows
            except FileNotFoundError:
                return
        data = self._partial + self._file.read()
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            note, signature_ok = parse_line(line.decode())
            self.bad_signatures += not signature_ok
            if note.webhook_id:
                if note.webhook_id in self._ids:
                    self.duplicates += 1
                    continue
                self._ids.add(note.webhook_id)
            if note.sync_type != "WEBHOOK":
                self.other_types[note.sync_type] += 1
            elif not note.success:
                self.failures.append(note)
            else:
                self.notes.append(note)
                self.covered += note.changed

    def covered_between(self, start: float, end: float) -> int:
        """Webhooks covered by notifications received in ``[start, end)``."""
        total = 0
        for note in reversed(self.notes):
            # Received times are in order up to the sink's threads racing for its lock; a
            # second of slack is far more than that race.
            if note.received_at < start - 1.0:
                break
            if start <= note.received_at < end:
                total += note.changed
        return total

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass
class _Pending:
    phase: str
    sent_at: float


class Matcher:
    """FIFO per connection: a notification for connection ``c`` with ``added + updated = n``
    covers the ``n`` oldest webhooks sent to ``c`` that no notification covered yet; the
    latency of each is the notification's receipt time minus that webhook's send time."""

    def __init__(self) -> None:
        self._pending: dict[str, deque[_Pending]] = defaultdict(deque)
        self._position = 0
        #: Webhooks registered (202s only: another status has nothing to wait for).
        self.added = 0
        self.latencies: dict[str, list[float]] = defaultdict(list)
        #: Coverage beyond the webhooks pending for that connection.
        self.extra = 0

    def add(self, phase: str, sends: Iterable[tuple[str, float]]) -> None:
        """Register ``(connection id, send time)`` pairs of ``phase``, in send order per
        connection (they are sorted here, since concurrent senders may finish out of order)."""
        by_account: dict[str, list[float]] = defaultdict(list)
        for account, sent_at in sends:
            by_account[account].append(sent_at)
        for account, times in by_account.items():
            self._pending[account].extend(_Pending(phase, at) for at in sorted(times))
            self.added += len(times)

    def match(self, notes: list[Note]) -> None:
        """Apply the notifications not matched yet. Call only once every webhook sent before
        the newest of them has been ``add``-ed, or it would count as extra."""
        for note in notes[self._position :]:
            queue = self._pending[note.connection_id]
            left = note.changed
            while left and queue:
                pending = queue.popleft()
                self.latencies[pending.phase].append(note.received_at - pending.sent_at)
                left -= 1
            self.extra += left
        self._position = len(notes)

    def outstanding(self) -> Counter[str]:
        """Webhooks not covered yet, per phase."""
        counts: Counter[str] = Counter()
        for queue in self._pending.values():
            for pending in queue:
                counts[pending.phase] += 1
        return counts


@dataclass
class _Seen:
    role: str
    label: str
    peak_rss: int = 0
    cpu_seconds: float = 0.0


@dataclass
class ProcessWatch:
    """Samples every ``interval`` s the processes under each root pid (root and descendants)."""

    roots: dict[str, int]
    interval: float = 0.25
    seen: dict[int, _Seen] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ProcessWatch:
        self._thread = threading.Thread(target=self._loop, name="process-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        for role, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                processes = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in processes:
                try:
                    with process.oneshot():
                        rss = process.memory_info().rss
                        times = process.cpu_times()
                except psutil.Error:
                    continue
                with self._lock:
                    seen = self.seen.get(process.pid)
                    if seen is None:
                        seen = self.seen[process.pid] = _Seen(role, self._label(role, pid, process))
                    seen.peak_rss = max(seen.peak_rss, rss)
                    seen.cpu_seconds = times.user + times.system

    def _label(self, role: str, root_pid: int, process: psutil.Process) -> str:
        if process.pid == root_pid:
            return {"web": "web master", "worker": "worker parent"}.get(role, role)
        kind = {"web": "web worker", "worker": "worker child"}.get(role, f"{role} child")
        number = 1 + sum(1 for s in self.seen.values() if s.label.startswith(kind))
        return f"{kind} {number}"

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far per role (sampled now), processes that exited included."""
        self.sample()
        totals: dict[str, float] = defaultdict(float)
        with self._lock:
            for seen in self.seen.values():
                totals[seen.role] += seen.cpu_seconds
        return dict(totals)

    def peaks(self) -> list[tuple[str, str, int, int]]:
        """``(role, label, pid, peak RSS bytes)`` per process, in the order first seen."""
        with self._lock:
            return [(s.role, s.label, pid, s.peak_rss) for pid, s in self.seen.items()]
