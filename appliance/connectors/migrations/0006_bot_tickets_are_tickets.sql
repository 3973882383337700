-- The bots' create_ticket now opens a real ticket (aicc.tickets, source 'bot', linked to the call):
-- the demo backends' own ticket tables held nothing anyone worked on, and go.
DROP TABLE aicc.demo_tickets;
DROP TABLE aicc.demo_bank_tickets;
