// A minimal Go service with manual spans: Go has no agent, so the code makes its spans with the
// OpenTelemetry API, with otelhttp around the handler and the HTTP client. One GET /orders/o-1
// gives one trace:
//
//	GET /orders/{id}      SERVER   (otelhttp handler)
//	├── SELECT orders     CLIENT   (manual: the database call, here a map)
//	├── price order       INTERNAL (manual)
//	└── HTTP GET          CLIENT   (otelhttp transport: a call to this service's /stock/{sku})
//	    └── GET /stock/{sku} SERVER (same trace through the traceparent header)
//
// The exporter is configured from OTEL_EXPORTER_OTLP_* variables; every log line carries the
// current trace_id and span_id.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

type order struct {
	SKU      string
	Quantity int
}

var orders = map[string]order{"o-1": {"sku-42", 2}, "o-2": {"sku-7", 1}}

var tracer = otel.Tracer("orders")

// logf writes one line with the IDs of the span in ctx, for Grafana's logs-to-trace links.
func logf(ctx context.Context, level slog.Level, format string, args ...any) {
	sc := trace.SpanContextFromContext(ctx)
	slog.Log(ctx, level, fmt.Sprintf(format, args...), "trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
}

// setupTracing installs a tracer provider that batches spans to OTLP/gRPC. Endpoint, headers,
// TLS, service name and resource attributes come from the standard OTEL_* variables.
func setupTracing(ctx context.Context) (func(context.Context) error, error) {
	exporter, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, err
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithHost())
	if err != nil {
		return nil, err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp.Shutdown, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stdout, nil)))
	shutdown, err := setupTracing(ctx)
	if err != nil {
		slog.Error("tracing setup failed", "error", err)
		os.Exit(1)
	}
	port := getenv("PORT", "8080")
	selfURL := getenv("SELF_URL", "http://127.0.0.1:"+port)
	client := &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport), Timeout: 5 * time.Second}

	mux := http.NewServeMux()
	handle(mux, "GET", "/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		id := r.PathValue("id")
		o, ok := lookup(ctx, id)
		if !ok {
			logf(ctx, slog.LevelWarn, "order %s not found", id)
			http.Error(w, "no order "+id, http.StatusNotFound)
			return
		}
		_, span := tracer.Start(ctx, "price order", trace.WithAttributes(attribute.String("order.id", id)))
		price := 9.5 * float64(o.Quantity)
		span.End()
		inStock, err := stock(ctx, client, selfURL, o.SKU)
		if err != nil {
			logf(ctx, slog.LevelError, "stock lookup failed: %v", err)
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		logf(ctx, slog.LevelInfo, "order %s: %s x%d, %.2f, in stock: %v", id, o.SKU, o.Quantity, price, inStock)
		writeJSON(w, map[string]any{"order": id, "sku": o.SKU, "quantity": o.Quantity, "price": price, "in_stock": inStock})
	})
	handle(mux, "GET", "/stock/{sku}", func(w http.ResponseWriter, r *http.Request) {
		logf(r.Context(), slog.LevelInfo, "stock lookup for %s", r.PathValue("sku"))
		writeJSON(w, map[string]any{"sku": r.PathValue("sku"), "in_stock": true})
	})

	// One server span per request, around the mux; handle() names it after the route.
	server := &http.Server{Addr: ":" + port, Handler: otelhttp.NewHandler(mux, "http.server")}
	go func() {
		if err := server.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("listen failed", "error", err)
			stop()
		}
	}()
	slog.Info("listening", "port", port)
	<-ctx.Done()
	// Stop taking requests, then send the spans still in the batch.
	done, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = server.Shutdown(done)
	_ = shutdown(done)
}

// handle registers h for method and route, and names the request's server span after the route
// (low cardinality: `/orders/{id}`, not `/orders/o-1`) with the http.route attribute that
// Spoor's search, span metrics and service graph group by.
func handle(mux *http.ServeMux, method, route string, h http.HandlerFunc) {
	mux.HandleFunc(method+" "+route, func(w http.ResponseWriter, r *http.Request) {
		span := trace.SpanFromContext(r.Context())
		span.SetName(method + " " + route)
		span.SetAttributes(attribute.String("http.route", route))
		h(w, r)
	})
}

// lookup is the database call: a CLIENT span with the database attributes.
func lookup(ctx context.Context, id string) (order, bool) {
	_, span := tracer.Start(ctx, "SELECT orders", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("db.system.name", "memory"),
			attribute.String("db.query.text", "SELECT sku, quantity FROM orders WHERE id = ?"),
		))
	defer span.End()
	o, ok := orders[id]
	return o, ok
}

func stock(ctx context.Context, client *http.Client, base, sku string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/stock/"+sku, nil)
	if err != nil {
		return false, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var body struct {
		InStock bool `json:"in_stock"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return false, err
	}
	return body.InStock, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func getenv(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
