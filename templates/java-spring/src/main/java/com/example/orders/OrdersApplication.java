package com.example.orders;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.web.client.RestTemplateBuilder;
import org.springframework.context.annotation.Bean;
import org.springframework.web.client.RestTemplate;

/**
 * A minimal Spring Boot service traced by the OpenTelemetry Java agent. One GET /orders/o-1
 * gives one trace: the server span (route /orders/{id}), the JDBC SELECT span, a manual
 * "price order" span and the RestTemplate call to /stock/{sku}, whose server span joins the
 * same trace through the traceparent header.
 */
@SpringBootApplication
public class OrdersApplication {

    public static void main(String[] args) {
        SpringApplication.run(OrdersApplication.class, args);
    }

    @Bean
    RestTemplate restTemplate(RestTemplateBuilder builder) {
        // Built by Spring's builder, so the agent's instrumentation of its HTTP client applies.
        return builder.build();
    }
}
