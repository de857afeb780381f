package otelmetrics_test

import (
	"context"
	"fmt"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/otelmetrics"
)

// A Manager reporting to an OpenTelemetry MeterProvider; here its reader
// is read by hand, in production it is an exporter (Prometheus, OTLP).
func Example() {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(context.Background())

	mx, err := otelmetrics.New(provider, otelmetrics.Options{})
	if err != nil {
		panic(err)
	}
	m, err := apikey.New(memstore.New(), apikey.Options{Metrics: mx})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	token, _, _ := m.Issue(ctx, apikey.IssueParams{Owner: "alice"})
	_, _ = m.Verify(ctx, token)
	_, _ = m.Verify(ctx, token)
	_ = m.Close(ctx)

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(ctx, &rm)
	for _, sm := range rm.ScopeMetrics {
		for _, metric := range sm.Metrics {
			if h, ok := metric.Data.(metricdata.Histogram[float64]); ok && metric.Name == "apikey.verification.duration" {
				for _, dp := range h.DataPoints {
					cache, _ := dp.Attributes.Value(otelmetrics.CacheKey)
					outcome, _ := dp.Attributes.Value(otelmetrics.OutcomeKey)
					fmt.Printf("%s %s: %d verification(s), in %s\n", outcome.AsString(), cache.AsString(), dp.Count, metric.Unit)
				}
			}
		}
	}
	// Unordered output:
	// ok miss: 1 verification(s), in s
	// ok hit: 1 verification(s), in s
}
