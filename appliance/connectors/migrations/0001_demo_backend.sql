-- Demo business backend: customers, orders, shipments, returns, tickets (tables demo_* in the
-- appliance schema, so the app login gets its privileges from the schema's default privileges).
CREATE SCHEMA IF NOT EXISTS aicc;

CREATE TABLE aicc.demo_customers (
    id          serial PRIMARY KEY,
    name        text NOT NULL,
    phone       text NOT NULL UNIQUE,
    language    text NOT NULL CHECK (language IN ('zh', 'en'))
);

CREATE TABLE aicc.demo_orders (
    id                text PRIMARY KEY CHECK (id ~ '^[0-9]{6}$'),
    customer_id       integer NOT NULL REFERENCES aicc.demo_customers(id),
    status            text NOT NULL CHECK (status IN ('processing', 'shipped', 'delivered', 'cancelled', 'returned')),
    item_en           text NOT NULL,
    item_zh           text NOT NULL,
    placed_on         date NOT NULL,
    delivery_address  text NOT NULL,
    carrier           text,
    tracking_no       text,
    eta               date
);

CREATE TABLE aicc.demo_shipment_events (
    id          serial PRIMARY KEY,
    order_id    text NOT NULL REFERENCES aicc.demo_orders(id),
    at          timestamptz NOT NULL,
    location_en text NOT NULL,
    location_zh text NOT NULL,
    event       text NOT NULL CHECK (event IN ('picked_up', 'in_transit', 'out_for_delivery', 'delivered'))
);

CREATE TABLE aicc.demo_address_changes (
    id          serial PRIMARY KEY,
    order_id    text NOT NULL REFERENCES aicc.demo_orders(id),
    old_address text NOT NULL,
    new_address text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    via         text NOT NULL
);

CREATE TABLE aicc.demo_returns (
    id          serial PRIMARY KEY,
    order_id    text NOT NULL REFERENCES aicc.demo_orders(id),
    reason      text NOT NULL,
    status      text NOT NULL DEFAULT 'requested',
    created_at  timestamptz NOT NULL DEFAULT now(),
    via         text NOT NULL
);

CREATE TABLE aicc.demo_tickets (
    id          serial PRIMARY KEY,
    summary     text NOT NULL,
    category    text NOT NULL,
    order_id    text REFERENCES aicc.demo_orders(id),
    caller      text NOT NULL,
    status      text NOT NULL DEFAULT 'open',
    created_at  timestamptz NOT NULL DEFAULT now()
);
