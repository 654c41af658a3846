"""Scheduled monitoring's activities: `check_due_services` (a tick of a ServiceMonitorWorkflow) and pruning.

A tick covers the next MONITOR_WINDOW_SECONDS. It loads its shard's enabled services due in that window, then runs
each service's check at the time it is due (again, if its interval is shorter than the window), at most
MONITOR_CONCURRENCY at once, in this one event loop: a thousand services cost one activity per window, not a
workflow task per check. When checks are still in flight at the window's end (a service hanging until its timeout),
the tick does not wait for them: it loads the next window and goes on beside them, and ends at the first window's
end with nothing in flight (or after TICK_MAX_SECONDS). Every half second the results so far are written in one
transaction: the `uptime_metrics` rows, each service's `service_states` row (core/monitoring.py: advance), and the
recoveries recorded on their incidents. An outage (failure_threshold failures in a row) then opens an incident
through the same path as the API (services/incidents/open.py) under the key `service:<id>:<episode>` — or joins the
open incident of the same service and type — and starts its playbook.

Retries are safe: results are unique per (service, scheduled time), a state moves on only with its result, an
outage whose incident did not open yet (`down`, no incident) is opened by the next attempt or tick under the same
key, and the IncidentWorkflow's id is the incident's.

A service with `degraded_incident` set also opens an incident of that type after `after_checks` slow checks in a row
(passes slower than its degraded_latency_ms), once per slow spell (`service:<id>:degraded:<first slow check>`); an
outage that follows joins it and raises its severity.

- activities.py: MonitorActivities, the two activities;
- tick.py: TickRun, one attempt of a tick (the window loop, the checks at their time, the flushes);
- store.py: the SQL (due services, states, results, links to incidents, pruning);
- outages.py: the incident side (opening or joining an outage's incident, the down and recovered messages);
- degraded.py: a slow spell's incident (opening, joining or reopening it, its end, the severity an outage raises);
- rows.py: what they pass around (Due, Result, Outage, Window).
"""

from activities.monitoring.activities import MonitorActivities

__all__ = ["MonitorActivities"]
