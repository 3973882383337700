-- Demo bank card service backend: customers by phone, their cards, transactions, what the bot did to
-- a card, and tickets. A caller reaches only the cards of the customer with the caller's number.
CREATE TABLE aicc.demo_bank_customers (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    phone       text NOT NULL UNIQUE CHECK (phone ~ '^\+[1-9][0-9]{7,14}$'),
    language    text NOT NULL CHECK (language IN ('zh', 'en')),
    tier        text NOT NULL DEFAULT 'standard' CHECK (tier IN ('standard', 'gold', 'vip'))
);

CREATE TABLE aicc.demo_bank_cards (
    id          serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES aicc.demo_bank_customers(id),
    last4       text NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    kind        text NOT NULL CHECK (kind IN ('debit', 'credit')),
    product_en  text NOT NULL,
    product_zh  text NOT NULL,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked', 'lost')),
    UNIQUE (customer_id, last4)
);

CREATE TABLE aicc.demo_bank_transactions (
    id          serial PRIMARY KEY,
    card_id     integer NOT NULL REFERENCES aicc.demo_bank_cards(id),
    at          timestamptz NOT NULL,
    amount      numeric(12, 2) NOT NULL CHECK (amount > 0),
    currency    text NOT NULL DEFAULT 'CNY',
    merchant_en text NOT NULL,
    merchant_zh text NOT NULL
);
CREATE INDEX demo_bank_transactions_card_at ON aicc.demo_bank_transactions (card_id, at DESC);

CREATE TABLE aicc.demo_bank_card_actions (
    id          serial PRIMARY KEY,
    card_id     integer NOT NULL REFERENCES aicc.demo_bank_cards(id),
    action      text NOT NULL CHECK (action IN ('block', 'report_lost')),
    old_status  text NOT NULL,
    new_status  text NOT NULL,
    caller      text NOT NULL,
    via         text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE aicc.demo_bank_tickets (
    id          serial PRIMARY KEY,
    customer_id integer REFERENCES aicc.demo_bank_customers(id),
    card_id     integer REFERENCES aicc.demo_bank_cards(id),
    summary     text NOT NULL,
    category    text NOT NULL,
    caller      text NOT NULL,
    status      text NOT NULL DEFAULT 'open',
    created_at  timestamptz NOT NULL DEFAULT now()
);
