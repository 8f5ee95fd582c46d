CREATE TABLE orders (id VARCHAR(16) PRIMARY KEY, sku VARCHAR(16), quantity INT);
INSERT INTO orders VALUES ('o-1', 'sku-42', 2), ('o-2', 'sku-7', 1);
