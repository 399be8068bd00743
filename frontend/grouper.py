"""Forms coding groups from the stream of queries, whoever sent them.

A query joins the open group and is dispatched at once (grouping never delays a data query);
the group closes when it holds k queries, or when ``group_timeout`` has passed since its first
query. A group closed early is served uncoded: padding it would need the base model's output
on the padding, and waiting longer would hold back the protection of the queries already sent.
Under steady load groups fill long before the timeout; under a trickle, queries are unprotected.
"""
from __future__ import annotations

from collections.abc import Callable

from frontend.dispatcher import GroupRun
from frontend.query import Query
from frontend.timers import Entry, TimerWheel


class Grouper:
    def __init__(self, k: int, group_timeout_s: float, new_run: Callable[[], GroupRun],
                 timers: TimerWheel | None = None) -> None:
        self.k = k
        self.group_timeout_s = group_timeout_s
        self.new_run = new_run
        self.timers = timers if timers is not None else TimerWheel()
        self._open: GroupRun | None = None
        self._timer: Entry | None = None

    def add(self, query: Query) -> None:
        if self._open is None:
            self._open = self.new_run()
            if self.k > 1:
                self._timer = self.timers.call_later(self.group_timeout_s, self.flush)
        self._open.add(query)
        if len(self._open.queries) >= self.k:
            self.flush()

    def flush(self) -> None:
        """Close the open group, full or not."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        run, self._open = self._open, None
        if run is not None:
            run.close()
