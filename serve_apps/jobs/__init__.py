"""Durable async jobs from submit to a final status, whatever dies on the way.

A job is a record in the database with a kind (`kind.JobKind`: "generate" is in `kinds/`). The
ingress replica that owns it runs the kind's work and refreshes a heartbeat while it waits
(`running`). If a worker dies under a job, the attempt fails and the job is retried up to
`max_attempts`, then ends Error with the reason. If the ingress replica itself dies, the heartbeat
stops: any ingress replica that sees the job stale adopts and retries it (`orphans`). No job stays
Pending forever. `core.JobCore` is all of that for any kind; `service.JobService` adds what the
routes need for generation. Seeds are drawn at submit (`submission`), so a retry makes the same images.
"""
