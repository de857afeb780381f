package otelmetrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/memlimit"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/otelmetrics"
)

// setup returns Metrics over a provider read by an in-memory reader.
func setup(t testing.TB, opts otelmetrics.Options) (*otelmetrics.Metrics, *sdkmetric.ManualReader) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { provider.Shutdown(context.Background()) })
	m, err := otelmetrics.New(provider, opts)
	require.NoError(t, err)
	return m, reader
}

// collected indexes one collection by metric name.
type collected map[string]metricdata.Metrics

func collect(t *testing.T, r *sdkmetric.ManualReader) collected {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out := collected{}
	for _, sm := range rm.ScopeMetrics {
		assert.Equal(t, otelmetrics.ScopeName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// attrs renders an attribute set as "k=v,k=v" in key order.
func attrs(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.Emit())
	}
	return strings.Join(parts, ",")
}

// histogram returns count and sum per attribute set of a histogram.
func histogram(t *testing.T, c collected, name, unit string) map[string][2]float64 {
	t.Helper()
	m, ok := c[name]
	require.True(t, ok, "no metric %s", name)
	assert.Equal(t, unit, m.Unit, name)
	h, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok, "%s is a %T", name, m.Data)
	assert.Equal(t, metricdata.CumulativeTemporality, h.Temporality)
	out := map[string][2]float64{}
	for _, dp := range h.DataPoints {
		out[attrs(dp.Attributes)] = [2]float64{float64(dp.Count), dp.Sum}
	}
	return out
}

// sum returns the value per attribute set of a monotonic counter.
func sum(t *testing.T, c collected, name, unit string) map[string]int64 {
	t.Helper()
	m, ok := c[name]
	require.True(t, ok, "no metric %s", name)
	assert.Equal(t, unit, m.Unit, name)
	s, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is a %T", name, m.Data)
	assert.True(t, s.IsMonotonic, name)
	out := map[string]int64{}
	for _, dp := range s.DataPoints {
		out[attrs(dp.Attributes)] = dp.Value
	}
	return out
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := otelmetrics.New(nil, otelmetrics.Options{})
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
}

// A scripted series of calls gives exactly these values.
func TestScriptedCalls(t *testing.T) {
	t.Parallel()
	m, reader := setup(t, otelmetrics.Options{Attributes: []attribute.KeyValue{attribute.String("service.name", "api")}})
	for range 3 {
		m.Verified("ok", "hit", 2*time.Microsecond)
	}
	m.Verified("ok", "miss", 3*time.Millisecond)
	m.Verified("invalid", "negative", 4*time.Microsecond)
	m.Verified("malformed", "off", time.Microsecond)
	m.Limited("allowed", "daily")
	m.Limited("allowed", "daily")
	m.Limited("denied", "per-second")
	m.LimiterFailed("fallback", true)
	m.LimiterFailed("fallback", false)
	m.LimiterFailed("fail-closed", false)
	m.Flushed(10, 5*time.Millisecond, nil)
	m.Flushed(7, 20*time.Millisecond, nil)
	m.Flushed(3, time.Second, context.DeadlineExceeded)
	m.Flushed(3, 2*time.Millisecond, errors.New("connection refused"))
	m.UsesQueued(7, 0)
	m.UsesQueued(2, 5)
	m.UsesQueued(4, 1)

	c := collect(t, reader)
	const svc = ",service.name=api"
	v := histogram(t, c, "apikey.verification.duration", "s")
	assert.Len(t, v, 4)
	assert.InDelta(t, 3, v["apikey.cache=hit,apikey.outcome=ok"+svc][0], 0)
	assert.InDelta(t, 6e-6, v["apikey.cache=hit,apikey.outcome=ok"+svc][1], 1e-12)
	assert.InDelta(t, 1, v["apikey.cache=miss,apikey.outcome=ok"+svc][0], 0)
	assert.InDelta(t, 3e-3, v["apikey.cache=miss,apikey.outcome=ok"+svc][1], 1e-12)
	assert.InDelta(t, 1, v["apikey.cache=negative,apikey.outcome=invalid"+svc][0], 0)
	assert.InDelta(t, 1, v["apikey.cache=off,apikey.outcome=malformed"+svc][0], 0)

	assert.Equal(t, map[string]int64{
		"apikey.limit=daily,apikey.outcome=allowed" + svc:     2,
		"apikey.limit=per-second,apikey.outcome=denied" + svc: 1,
	}, sum(t, c, "apikey.ratelimit.decisions", "{decision}"))
	assert.Equal(t, map[string]int64{
		"apikey.breaker.open=true,apikey.policy=fallback" + svc:     1,
		"apikey.breaker.open=false,apikey.policy=fallback" + svc:    1,
		"apikey.breaker.open=false,apikey.policy=fail-closed" + svc: 1,
	}, sum(t, c, "apikey.ratelimit.failures", "{failure}"))

	f := histogram(t, c, "apikey.last_used.flush.duration", "s")
	assert.Len(t, f, 3)
	assert.InDelta(t, 2, f[strings.TrimPrefix(svc, ",")][0], 0)
	assert.InDelta(t, 0.025, f[strings.TrimPrefix(svc, ",")][1], 1e-12)
	assert.InDelta(t, 1, f["error.type=timeout"+svc][0], 0)
	assert.InDelta(t, 1, f["error.type=_OTHER"+svc][0], 0)
	assert.Equal(t, map[string]int64{"service.name=api": 17}, sum(t, c, "apikey.last_used.flushed", "{key}"),
		"only successful flushes count as written")
	assert.Equal(t, map[string]int64{"service.name=api": 6}, sum(t, c, "apikey.last_used.dropped", "{use}"))

	q, ok := c["apikey.last_used.queue.size"]
	require.True(t, ok)
	g, ok := q.Data.(metricdata.Gauge[int64])
	require.True(t, ok, "%T", q.Data)
	require.Len(t, g.DataPoints, 1)
	assert.EqualValues(t, 4, g.DataPoints[0].Value, "the gauge shows the last queue length")
	assert.Equal(t, "{key}", q.Unit)
}

// Through a Manager: every verification is counted by outcome and cache
// result, a flush by its keys, and no attribute holds a key id or token.
func TestManagerRun(t *testing.T) {
	t.Parallel()
	mx, reader := setup(t, otelmetrics.Options{})
	m, err := apikey.New(memstore.New(), apikey.Options{Metrics: mx, LastUsedInterval: time.Hour})
	require.NoError(t, err)
	ctx := context.Background()
	token, k, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice"})
	require.NoError(t, err)
	revokedToken, revoked, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice"})
	require.NoError(t, err)
	require.NoError(t, m.Revoke(ctx, revoked.ID))

	for range 3 {
		_, err = m.Verify(ctx, token)
		require.NoError(t, err)
	}
	_, err = m.Verify(ctx, "sk_not-a-token")
	require.Error(t, err)
	_, err = m.Verify(ctx, revokedToken)
	require.ErrorIs(t, err, apikey.ErrRevoked)
	require.NoError(t, m.Close(ctx)) // flushes the one used key

	c := collect(t, reader)
	v := histogram(t, c, "apikey.verification.duration", "s")
	byOutcome := map[string]float64{}
	var total float64
	for set, cs := range v {
		for _, kv := range strings.Split(set, ",") {
			if o, ok := strings.CutPrefix(kv, "apikey.outcome="); ok {
				byOutcome[o] += cs[0]
			}
		}
		total += cs[0]
	}
	assert.Equal(t, map[string]float64{"ok": 3, "malformed": 1, "revoked": 1}, byOutcome)
	assert.InDelta(t, 5, total, 0)
	assert.InDelta(t, 1, v["apikey.cache=miss,apikey.outcome=ok"][0], 0, "%v", v)
	assert.InDelta(t, 2, v["apikey.cache=hit,apikey.outcome=ok"][0], 0, "%v", v)
	assert.Equal(t, map[string]int64{"": 1}, sum(t, c, "apikey.last_used.flushed", "{key}"))

	for name, metric := range c {
		for _, set := range attributeSets(metric) {
			for _, kv := range set.ToSlice() {
				val := kv.Value.Emit()
				assert.NotContains(t, val, k.ID, "%s: %s", name, kv.Key)
				assert.NotContains(t, val, revoked.ID, "%s: %s", name, kv.Key)
				assert.NotEqual(t, "alice", val, "%s: %s", name, kv.Key)
			}
		}
	}
}

// The middleware's rate-limit decisions reach the instruments: a real
// Manager, Middleware and memlimit, not scripted calls.
func TestMiddlewareRun(t *testing.T) {
	t.Parallel()
	mx, reader := setup(t, otelmetrics.Options{})
	m, err := apikey.New(memstore.New(), apikey.Options{
		Metrics: mx, LastUsedInterval: -1,
		Plans: limits.Plans{"free": {limits.Quota("daily", 2, limits.Day)}},
	})
	require.NoError(t, err)
	ctx := context.Background()
	t.Cleanup(func() { m.Close(ctx) })
	l, err := memlimit.New(memlimit.Options{})
	require.NoError(t, err)
	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Limits: apikey.LimitOptions{Limiter: l}})
	require.NoError(t, err)
	token, _, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice", Plan: "free"})
	require.NoError(t, err)
	h := mw.Handler(mw.Limit(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	var codes []int
	for range 3 {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		codes = append(codes, rec.Code)
	}
	assert.Equal(t, []int{200, 200, 429}, codes)
	c := collect(t, reader)
	assert.Equal(t, map[string]int64{
		"apikey.limit=daily,apikey.outcome=allowed": 2,
		"apikey.limit=daily,apikey.outcome=denied":  1,
	}, sum(t, c, "apikey.ratelimit.decisions", "{decision}"))
}

func attributeSets(m metricdata.Metrics) []attribute.Set {
	var out []attribute.Set
	switch d := m.Data.(type) {
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	case metricdata.Sum[int64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	case metricdata.Gauge[int64]:
		for _, dp := range d.DataPoints {
			out = append(out, dp.Attributes)
		}
	}
	return out
}

// A measurement allocates nothing once its attribute set is known.
func TestVerifiedDoesNotAllocate(t *testing.T) {
	m, _ := setup(t, otelmetrics.Options{})
	m.Verified("ok", "hit", time.Microsecond)
	allocs := testing.AllocsPerRun(1000, func() { m.Verified("ok", "hit", time.Microsecond) })
	assert.Zero(t, allocs)
}

func BenchmarkVerified(b *testing.B) {
	m, _ := setup(b, otelmetrics.Options{})
	b.ReportAllocs()
	b.Run("Serial", func(b *testing.B) {
		for b.Loop() {
			m.Verified("ok", "hit", time.Microsecond)
		}
	})
	b.Run("Parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				m.Verified("ok", "hit", time.Microsecond)
			}
		})
	})
}
