"""Call records: CDR, transcript with timings, tool calls and outcome, stored in PostgreSQL."""
