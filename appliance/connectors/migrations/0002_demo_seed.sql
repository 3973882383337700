-- Seed data the demo, `aicc smoke` and the tests rely on (order 100234: shipped, with SF Express).
INSERT INTO aicc.demo_customers (id, name, phone, language) VALUES
    (1, 'Alice Smith', '+8613800000001', 'en'),
    (2, '王芳', '+8613800000002', 'zh'),
    (3, 'Bob Lee', '+8613800000003', 'en');
SELECT setval('aicc.demo_customers_id_seq', 3);

INSERT INTO aicc.demo_orders (id, customer_id, status, item_en, item_zh, placed_on, delivery_address, carrier, tracking_no, eta) VALUES
    ('100234', 1, 'shipped',    'a pair of running shoes', '一双跑鞋', DATE '2026-11-20', '12 Century Avenue, Shanghai', 'SF Express', 'SF1234567890', DATE '2026-11-27'),
    ('100235', 1, 'delivered',  'a coffee grinder',        '一台磨豆机', DATE '2026-11-10', '12 Century Avenue, Shanghai', 'JD Logistics', 'JD0987654321', DATE '2026-11-13'),
    ('100236', 2, 'processing', 'a rice cooker',           '一个电饭煲', DATE '2026-11-23', '上海市浦东新区世纪大道100号', NULL, NULL, DATE '2026-11-29'),
    ('100237', 2, 'shipped',    'a winter jacket',         '一件冬季外套', DATE '2026-11-21', '北京市朝阳区建国路88号', 'SF Express', 'SF5556667778', DATE '2026-11-26'),
    ('100238', 3, 'delivered',  'a desk lamp',             '一盏台灯', DATE '2026-11-01', '8 Nanjing Road, Shanghai', 'YTO Express', 'YT3334445556', DATE '2026-11-04');

INSERT INTO aicc.demo_shipment_events (order_id, at, location_en, location_zh, event) VALUES
    ('100234', TIMESTAMPTZ '2026-11-21 09:10+08', 'Shenzhen', '深圳', 'picked_up'),
    ('100234', TIMESTAMPTZ '2026-11-23 18:40+08', 'Hangzhou', '杭州', 'in_transit'),
    ('100235', TIMESTAMPTZ '2026-11-13 10:05+08', 'Shanghai', '上海', 'delivered'),
    ('100237', TIMESTAMPTZ '2026-11-22 08:00+08', 'Guangzhou', '广州', 'picked_up'),
    ('100237', TIMESTAMPTZ '2026-11-24 07:30+08', 'Beijing', '北京', 'out_for_delivery'),
    ('100238', TIMESTAMPTZ '2026-11-04 15:20+08', 'Shanghai', '上海', 'delivered');
