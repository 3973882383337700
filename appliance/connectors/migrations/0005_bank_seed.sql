-- Seed the demo, the lab's test calls and the tests rely on. The test caller 13800138000 (李雷) has two
-- active cards, 8421 and 5307; 王芳 has a card ending 8421 too (blocked): a caller's card is found by
-- the caller's number and its last four digits, never by the digits alone.
INSERT INTO aicc.demo_bank_customers (id, name, phone, language, tier) VALUES
    (1, '李雷', '+8613800138000', 'zh', 'vip'),
    (2, 'Alice Smith', '+8613800000001', 'en', 'gold'),
    (3, '王芳', '+8613800000002', 'zh', 'standard');
SELECT setval('aicc.demo_bank_customers_id_seq', 3);

INSERT INTO aicc.demo_bank_cards (id, customer_id, last4, kind, product_en, product_zh, status) VALUES
    (1, 1, '8421', 'debit',  'debit card',           '借记卡',     'active'),
    (2, 1, '5307', 'credit', 'platinum credit card', '白金信用卡', 'active'),
    (3, 2, '1122', 'credit', 'credit card',          '信用卡',     'active'),
    (4, 3, '8421', 'debit',  'debit card',           '借记卡',     'blocked'),
    (5, 3, '7788', 'credit', 'credit card',          '信用卡',     'active');
SELECT setval('aicc.demo_bank_cards_id_seq', 5);

INSERT INTO aicc.demo_bank_transactions (card_id, at, amount, merchant_en, merchant_zh) VALUES
    (1, TIMESTAMPTZ '2026-11-24 08:15+08', 36.50,   'Starbucks',          '星巴克'),
    (1, TIMESTAMPTZ '2026-11-23 19:42+08', 1280.00, 'JD.com',             '京东商城'),
    (1, TIMESTAMPTZ '2026-11-22 12:05+08', 58.00,   'Hema Fresh',         '盒马鲜生'),
    (1, TIMESTAMPTZ '2026-11-20 21:30+08', 199.00,  'China Mobile',       '中国移动'),
    (2, TIMESTAMPTZ '2026-11-24 13:20+08', 420.00,  'Haidilao',           '海底捞'),
    (2, TIMESTAMPTZ '2026-11-21 10:00+08', 3699.00, 'Apple Store',        '苹果零售店'),
    (3, TIMESTAMPTZ '2026-11-23 09:00+08', 88.80,   'Didi',               '滴滴出行'),
    (4, TIMESTAMPTZ '2026-11-19 18:00+08', 25.00,   'Luckin Coffee',      '瑞幸咖啡'),
    (5, TIMESTAMPTZ '2026-11-22 16:45+08', 259.00,  'Uniqlo',             '优衣库');
