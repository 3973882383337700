"""Retention of personal data (PIPL Art. 19: kept no longer than the purpose needs; MLPS 8.1.4.10/11):
call transcripts, the bot's tool calls and web-chat messages older than `transcript_retention_days`,
the names and identities of customers idle for as long, and the customer's data in tickets finished
longer than `ticket_retention_days` ago are purged by a job in the API process, one host at a time,
and every run is recorded in aicc.retention_runs and the audit log (purge.py); `GET /api/retention`
shows them."""
