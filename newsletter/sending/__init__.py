"""Sending: one neutral message, any transport, a crash-safe per-recipient ledger.

- `message`: the neutral Message / Recipient / Batch (names no provider).
- `transports/`: SendGrid, SMTP and the outbox, registered alike, asked what they can do.
- `factory`: the one place that chooses a transport.  - `mime`: a reader's copy as MIME.
- `plan` then `execute`: a send decided, then carried out.
- `loop`: the one sending loop; an issue's recipients and a sequence's due people are its sources.
- `answers`: what a transport answered, into the ledger and the readers' state.
- `ledger`: deliveries, sends, leases (an issue's and a sequence run's).  - `summary`: `sends`.
- `schedule`: parsing `--schedule WHEN`.  - `single`: one-off transactional mail.
"""
