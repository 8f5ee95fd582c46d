package com.example.orders;

import io.opentelemetry.api.GlobalOpenTelemetry;
import io.opentelemetry.api.trace.Span;
import io.opentelemetry.api.trace.Tracer;
import io.opentelemetry.context.Scope;
import java.util.List;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.http.HttpStatus;
import org.springframework.jdbc.core.JdbcTemplate;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.RestController;
import org.springframework.web.client.RestTemplate;
import org.springframework.web.server.ResponseStatusException;

@RestController
public class OrderController {

    private static final Logger log = LoggerFactory.getLogger(OrderController.class);

    // With the agent attached this is its SDK; without it, a no-op (the app still runs).
    private final Tracer tracer = GlobalOpenTelemetry.getTracer("orders");
    private final JdbcTemplate db;
    private final RestTemplate http;
    private final String selfUrl;

    public OrderController(JdbcTemplate db, RestTemplate http, @Value("${orders.self-url}") String selfUrl) {
        this.db = db;
        this.http = http;
        this.selfUrl = selfUrl;
    }

    public record Order(String order, String sku, int quantity, double price, boolean inStock) {}

    @GetMapping("/orders/{id}")
    public Order order(@PathVariable String id) {
        List<Map<String, Object>> rows = db.queryForList("SELECT sku, quantity FROM orders WHERE id = ?", id);
        if (rows.isEmpty()) {
            log.warn("order {} not found", id);
            throw new ResponseStatusException(HttpStatus.NOT_FOUND, "no order " + id);
        }
        String sku = (String) rows.get(0).get("SKU");
        int quantity = ((Number) rows.get(0).get("QUANTITY")).intValue();
        double price;
        Span span = tracer.spanBuilder("price order").setAttribute("order.id", id).startSpan();
        try (Scope ignored = span.makeCurrent()) {
            price = 9.5 * quantity;
        } finally {
            span.end();
        }
        Map<?, ?> stock = http.getForObject(selfUrl + "/stock/{sku}", Map.class, sku);
        boolean inStock = stock != null && Boolean.TRUE.equals(stock.get("in_stock"));
        log.info("order {}: {} x{}, {}, in stock: {}", id, sku, quantity, price, inStock);
        return new Order(id, sku, quantity, price, inStock);
    }

    @GetMapping("/stock/{sku}")
    public Map<String, Object> stock(@PathVariable String sku) {
        log.info("stock lookup for {}", sku);
        return Map.of("sku", sku, "in_stock", true);
    }
}
