-- Customer value tiers (the ACD's routing policy gives each tier a score offset; an IVR lookup node
-- reads it with the lookup_customer tool), and the lab's test caller: test calls come From
-- 13800138000, a retail customer here and a bank customer (0005) too.
ALTER TABLE aicc.demo_customers
    ADD COLUMN tier text NOT NULL DEFAULT 'standard' CHECK (tier IN ('standard', 'gold', 'vip'));

UPDATE aicc.demo_customers SET tier = 'gold' WHERE id = 1;
UPDATE aicc.demo_customers SET tier = 'vip' WHERE id = 2;

INSERT INTO aicc.demo_customers (id, name, phone, language, tier) VALUES
    (4, '李雷', '+8613800138000', 'zh', 'gold');
SELECT setval('aicc.demo_customers_id_seq', 4);
