"""Signed webhooks for approval decisions (security.md §2, Standard Webhooks).

When a human decides a pending call, or it expires, the agent's registered endpoints are told
by a signed HTTP POST. The pieces, one concept per module:

* ``endpoints`` -- register / list / rotate / disable endpoints (admin only; every change audited).
* ``secrets`` -- endpoint secrets sealed at rest (AES-GCM, key derived from the server secret).
* ``outbox`` -- the event rows, written in the decision's own transaction (never lost, never
  invented by a rolled-back decision).
* ``signing`` -- secrets and the ``webhook-*`` headers.
* ``ssrf`` -- which destinations the gateway may connect to, checked at registration and again
  before every attempt.
* ``transport`` -- one POST to a checked, pinned IP address.
* ``retry`` -- what an attempt's result means (delivered / retry / failed) and when to retry.
* ``delivery`` -- claim due rows, send them, record every attempt; disable dead endpoints.
* ``replay`` -- an admin's "send it again": same ``webhook-id``, fresh attempt budget.
* ``history`` -- read the delivery log back (admin API, CLI).
* ``dispatch`` -- who runs delivery: an in-process thread (embedded mode) or Celery (with Redis).
"""
