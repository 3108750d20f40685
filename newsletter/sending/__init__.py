"""Sending an issue: SendGrid or the outbox, batched, with a crash-safe per-recipient ledger.

- `payload`: SendGrid request dicts.  - `transport`: SendGrid client and outbox.
- `ledger`: the deliveries ledger and the per-issue lease.  - `sender`: orchestration.
- `schedule`: parsing `--schedule WHEN`.  - `single`: one-off transactional mail.
"""
