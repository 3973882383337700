"""Tickets: cases created from a call, a chat, an email, the bot or an agent, with SLA policies whose
figures are computed from each ticket's append-only event history (sla.py); store.py keeps them in
PostgreSQL and appliance/api/routes/tickets.py serves them."""
