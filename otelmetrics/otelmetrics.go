// Package otelmetrics reports what apikey does as OpenTelemetry metrics.
// It implements apikey.Metrics with instruments of a
// go.opentelemetry.io/otel/metric Meter. Pick it to see verification
// outcomes, rate-limit decisions and last-used flushes in an OpenTelemetry
// pipeline or, through the OTel Prometheus exporter, with a Prometheus
// scraper. For another metrics system, implement apikey.Metrics directly.
//
//	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
//	mx, err := otelmetrics.New(provider, otelmetrics.Options{})
//	if err != nil { ... }
//	m, err := apikey.New(store, apikey.Options{Metrics: mx, ...})
//
// The instruments below are all under the meter "github.com/gokeys/apikey".
//
//	apikey.verification.duration   histogram, s       apikey.outcome, apikey.cache
//	apikey.ratelimit.decisions     counter, {decision} apikey.outcome, apikey.limit
//	apikey.ratelimit.failures      counter, {failure}  apikey.policy, apikey.breaker.open
//	apikey.last_used.flush.duration histogram, s      error.type (failures only)
//	apikey.last_used.flushed       counter, {key}     (keys written by successful flushes)
//	apikey.last_used.queue.size    gauge, {key}
//	apikey.last_used.dropped       counter, {use}
//
// Attribute values are the fixed strings of apikey.Metrics (outcomes, cache
// results, policies) and the limit names of your plans. They are never a key
// id, an owner or a token, so the number of series stays small. The count of
// a duration histogram is the number of verifications or flushes. Through
// Prometheus the names become apikey_verification_duration_seconds and so
// on.
package otelmetrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/gokeys/apikey"
)

// ScopeName is the instrumentation scope (meter name) of the instruments.
const ScopeName = "github.com/gokeys/apikey"

// Attribute keys.
const (
	OutcomeKey    = attribute.Key("apikey.outcome")
	CacheKey      = attribute.Key("apikey.cache")
	LimitKey      = attribute.Key("apikey.limit")
	PolicyKey     = attribute.Key("apikey.policy")
	BreakerKey    = attribute.Key("apikey.breaker.open")
	ErrorTypeKey  = attribute.Key("error.type")
	errorTimeout  = "timeout"
	errorCanceled = "canceled"
	errorOther    = "_OTHER"
)

// Bucket boundaries, in seconds. Verifications take microseconds on a
// cache hit and milliseconds on a miss. Flushes take milliseconds to
// seconds.
var (
	verifyBuckets = []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
		1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5}
	flushBuckets = []float64{1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
)

// Options configures a Metrics. The zero value is ready to use.
type Options struct {
	// Attributes are added to every measurement, e.g. a service or
	// deployment name. Keep them few and of low cardinality.
	Attributes []attribute.KeyValue
}

// Metrics implements apikey.Metrics with OpenTelemetry instruments. Build
// it with New. It is safe for concurrent use. Attribute sets are built
// once per combination of values and then reused, so a measurement does
// not allocate.
type Metrics struct {
	verify       metric.Float64Histogram
	decisions    metric.Int64Counter
	failures     metric.Int64Counter
	flush        metric.Float64Histogram
	flushed      metric.Int64Counter
	queue        metric.Int64Gauge
	dropped      metric.Int64Counter
	extra        []attribute.KeyValue
	plain        *measure
	mu           sync.RWMutex
	options      map[optionKey]*measure
	flushOptions [4]*measure
}

var _ apikey.Metrics = (*Metrics)(nil)

// New creates the instruments on provider's meter ScopeName. A nil
// provider gives an error wrapping apikey.ErrInvalidOptions.
func New(provider metric.MeterProvider, opts Options) (*Metrics, error) {
	if provider == nil {
		return nil, fmt.Errorf("%w: otelmetrics: nil MeterProvider", apikey.ErrInvalidOptions)
	}
	meter := provider.Meter(ScopeName)
	m := &Metrics{extra: append([]attribute.KeyValue(nil), opts.Attributes...),
		options: map[optionKey]*measure{}}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	m.verify, err = meter.Float64Histogram("apikey.verification.duration",
		metric.WithDescription("Duration of API key verifications, by outcome and cache result."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(verifyBuckets...))
	add(err)
	m.decisions, err = meter.Int64Counter("apikey.ratelimit.decisions",
		metric.WithDescription("Rate-limit decisions, by outcome and deciding limit."),
		metric.WithUnit("{decision}"))
	add(err)
	m.failures, err = meter.Int64Counter("apikey.ratelimit.failures",
		metric.WithDescription("Limiter failures, by the failure policy applied and whether the circuit breaker was open."),
		metric.WithUnit("{failure}"))
	add(err)
	m.flush, err = meter.Float64Histogram("apikey.last_used.flush.duration",
		metric.WithDescription("Duration of last-used flushes to the store; error.type is set on failures."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(flushBuckets...))
	add(err)
	m.flushed, err = meter.Int64Counter("apikey.last_used.flushed",
		metric.WithDescription("Keys whose last-used time successful flushes wrote."),
		metric.WithUnit("{key}"))
	add(err)
	m.queue, err = meter.Int64Gauge("apikey.last_used.queue.size",
		metric.WithDescription("Keys waiting for a last-used flush."),
		metric.WithUnit("{key}"))
	add(err)
	m.dropped, err = meter.Int64Counter("apikey.last_used.dropped",
		metric.WithDescription("Uses not recorded for last-used tracking because the queue was full."),
		metric.WithUnit("{use}"))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("otelmetrics: %w", err)
	}
	m.plain = newMeasure(m.with())
	for i, typ := range []string{"", errorTimeout, errorCanceled, errorOther} {
		if typ == "" {
			m.flushOptions[i] = m.plain
			continue
		}
		m.flushOptions[i] = newMeasure(m.with(ErrorTypeKey.String(typ)))
	}
	return m, nil
}

// with returns the measurement option of kv plus Options.Attributes.
func (m *Metrics) with(kv ...attribute.KeyValue) metric.MeasurementOption {
	all := make([]attribute.KeyValue, 0, len(kv)+len(m.extra))
	all = append(append(all, kv...), m.extra...)
	return metric.WithAttributeSet(attribute.NewSet(all...))
}

// optionKey identifies one combination of attribute values.
type optionKey struct {
	kind int8
	a, b string
}

// measure holds the option slices of one attribute set, so that passing
// them does not allocate a slice per measurement.
type measure struct {
	record []metric.RecordOption
	add    []metric.AddOption
}

func newMeasure(o metric.MeasurementOption) *measure {
	return &measure{record: []metric.RecordOption{o}, add: []metric.AddOption{o}}
}

// Kinds of optionKey.
const (
	kindVerified int8 = iota
	kindLimited
	kindFailed
)

// maxOptions bounds the cache of attribute sets (combinations beyond it
// are built per measurement).
const maxOptions = 1024

// option returns the measurement option of one combination of attribute
// values, built on first use.
func (m *Metrics) option(k optionKey) *measure {
	m.mu.RLock()
	o, ok := m.options[k]
	m.mu.RUnlock()
	if ok {
		return o
	}
	var kv []attribute.KeyValue
	switch k.kind {
	case kindVerified:
		kv = []attribute.KeyValue{OutcomeKey.String(k.a), CacheKey.String(k.b)}
	case kindLimited:
		kv = []attribute.KeyValue{OutcomeKey.String(k.a), LimitKey.String(k.b)}
	default:
		kv = []attribute.KeyValue{PolicyKey.String(k.a), BreakerKey.Bool(k.b == "true")}
	}
	o = newMeasure(m.with(kv...))
	m.mu.Lock()
	if len(m.options) < maxOptions {
		m.options[k] = o
	}
	m.mu.Unlock()
	return o
}

// Verified implements apikey.Metrics.
func (m *Metrics) Verified(outcome, cache string, d time.Duration) {
	m.verify.Record(context.Background(), d.Seconds(), m.option(optionKey{kindVerified, outcome, cache}).record...)
}

// Limited implements apikey.Metrics.
func (m *Metrics) Limited(outcome, limit string) {
	m.decisions.Add(context.Background(), 1, m.option(optionKey{kindLimited, outcome, limit}).add...)
}

// LimiterFailed implements apikey.Metrics.
func (m *Metrics) LimiterFailed(policy string, breakerOpen bool) {
	open := "false"
	if breakerOpen {
		open = "true"
	}
	m.failures.Add(context.Background(), 1, m.option(optionKey{kindFailed, policy, open}).add...)
}

// Flushed implements apikey.Metrics. It records the duration of every
// flush, with error.type "timeout", "canceled" or "_OTHER" on a failure,
// and the keys written by a successful one.
func (m *Metrics) Flushed(keys int, d time.Duration, err error) {
	ctx := context.Background()
	switch {
	case err == nil:
		m.flush.Record(ctx, d.Seconds(), m.flushOptions[0].record...)
		m.flushed.Add(ctx, int64(keys), m.plain.add...)
	case errors.Is(err, context.DeadlineExceeded):
		m.flush.Record(ctx, d.Seconds(), m.flushOptions[1].record...)
	case errors.Is(err, context.Canceled):
		m.flush.Record(ctx, d.Seconds(), m.flushOptions[2].record...)
	default:
		m.flush.Record(ctx, d.Seconds(), m.flushOptions[3].record...)
	}
}

// UsesQueued implements apikey.Metrics.
func (m *Metrics) UsesQueued(queued, dropped int) {
	ctx := context.Background()
	m.queue.Record(ctx, int64(queued), m.plain.record...)
	if dropped > 0 {
		m.dropped.Add(ctx, int64(dropped), m.plain.add...)
	}
}
