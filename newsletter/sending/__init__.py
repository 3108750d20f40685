"""Sending: one neutral message, any transport, a crash-safe per-recipient ledger.

- `message`: the neutral Message / Recipient / Batch (names no provider).
- `transports/`: SendGrid, SMTP and the outbox, registered alike, asked what they can do.
- `factory`: the one place that chooses a transport.  - `mime`: a reader's copy as MIME.
- `plan` then `execute`: a send decided, then carried out.
- `ledger`: deliveries, sends, leases.  - `summary`: what `sends` shows.
- `schedule`: parsing `--schedule WHEN`.  - `single`: one-off transactional mail.
"""
