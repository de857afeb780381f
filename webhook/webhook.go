// Package webhook delivers the events a Manager writes to its store's
// outbox (see package outbox) to HTTP endpoints, signed as the Standard
// Webhooks specification says, and verifies them on the receiving side.
//
// A Dispatcher delivers at least once, from any number of instances over
// one store. Each attempt holds a lease on its event, so that two
// instances never deliver one event at once. The lease of an instance that
// crashed ends after Options.Lease, and then any instance retries. A
// failed attempt is retried on a schedule with jitter (1 s, 5 s, 30 s, 5
// min, ... by default) until Options.MaxAttempts. The event is then dead
// until Manager.Redeliver.
//
//	d, err := webhook.New(store, webhook.Options{
//		Endpoints: []webhook.Endpoint{{URL: "https://example.com/hooks", Secrets: []string{"whsec_..."}}},
//		Logger:    logger,
//	})
//	if err != nil { ... }
//	go d.Run(ctx) // until ctx is done
//
// Every request is a POST of the event's JSON (an outbox.Payload) with
// three headers. The webhook-id is the same for every attempt, and
// receivers drop repeats by it. The webhook-timestamp is the attempt's
// Unix time. The webhook-signature holds "v1,<base64 HMAC-SHA256 of
// id.timestamp.body>" once per secret of the endpoint. A receiver checks
// them with a Verifier.
package webhook

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/outbox"
)

// DefaultSchedule is the wait before each retry when Options.Schedule is
// nil. The first retry comes within seconds, then longer and longer waits
// span about three days, as the specification suggests. Each wait is
// drawn within 20% of its value (jitter).
func DefaultSchedule() []time.Duration {
	return []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 5 * time.Minute, 30 * time.Minute,
		2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 14 * time.Hour, 20 * time.Hour, 24 * time.Hour}
}

// Endpoint is a receiver of webhooks.
type Endpoint struct {
	// Name is the endpoint's name in outbox.Policy.Endpoints,
	// outbox.DefaultEndpoint when empty.
	Name string
	// URL receives a POST per attempt, over http or https.
	URL string
	// Secrets sign every attempt, each adding a signature. A secret is
	// "whsec_" followed by the base64 of 24 to 64 bytes (see NewSecret).
	// To rotate, give the new secret and the old one until every receiver
	// has the new one.
	Secrets []string
	// Concurrency bounds the attempts to this endpoint in flight from
	// one instance. It is 4 when 0.
	Concurrency int
}

// Options configures a Dispatcher. Only Endpoints is required.
type Options struct {
	// Endpoints are the receivers. Each delivers the events written for
	// its Name, and leaves those of other names to other dispatchers.
	Endpoints []Endpoint
	// Schedule is the wait before each retry. Schedule[i] follows the
	// (i+1)-th failed attempt, and the last entry every later one. Each
	// wait is drawn within 20% of its value. It is DefaultSchedule when
	// nil. A Retry-After in a 429 or 503 answer waits longer when it says
	// so.
	Schedule []time.Duration
	// MaxAttempts is how many attempts an event gets before it is dead,
	// len(Schedule)+1 when 0. An answer 410 Gone makes it dead at once.
	MaxAttempts int
	// Timeout bounds one attempt. It is 15 seconds when 0.
	Timeout time.Duration
	// Lease is how long an attempt holds its event. It is 1 minute when
	// 0, and must be more than Timeout. It is how long after a crash the
	// event waits before another instance retries it.
	Lease time.Duration
	// Poll is how often the outbox is asked for due events, every
	// second when 0. A retry due sooner is made on time.
	Poll time.Duration
	// Retention is how long delivered and dead events are kept, for
	// Redeliver and audits. It is 30 days when 0, and negative keeps them.
	Retention time.Duration
	// Client sends the requests. When nil, a client that follows no
	// redirect does, since a 3xx is a failed attempt for the
	// specification. It keeps an idle connection for each attempt an
	// endpoint may have in flight (Endpoint.Concurrency).
	Client *http.Client
	// Now returns the current time, time.Now when nil. Leases, due times
	// and webhook-timestamp read it. The instances' clocks must agree
	// within a fraction of Lease.
	Now func() time.Time
	// Logger, if set, receives failed attempts (Warn), dead events
	// (Error) and deliveries (Debug), by event id and endpoint name,
	// never a URL or a secret.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	defaultConcurrency = 4
	defaultTimeout     = 15 * time.Second
	defaultLease       = time.Minute
	defaultPoll        = time.Second
	defaultRetention   = 30 * 24 * time.Hour
	purgeEvery         = time.Hour
	purgeBatch         = 1000
	maxResponse        = 64 << 10 // read of an answer, for the connection's reuse
)

// Stats counts a Dispatcher's attempts since New. It is plain data.
type Stats struct {
	// Attempts counts the requests sent. Delivered counts those
	// acknowledged (2xx) and recorded as such. Failed counts those that
	// failed and were scheduled again. Dead counts the events given up.
	Attempts, Delivered, Failed, Dead uint64
	// Lost counts outcomes not recorded because the event's lease had
	// passed to another claim (or the event was cancelled meanwhile).
	Lost uint64
	// StoreErrors counts the outbox calls that failed.
	StoreErrors uint64
}

// endpoint is an Endpoint ready to deliver.
type endpoint struct {
	name     string
	url      string
	keys     [][]byte
	slots    chan struct{} // one token per attempt in flight
	inflight atomic.Int64
}

// Dispatcher delivers the events of an outbox to their endpoints. Build it
// with New. It is safe for concurrent use, and any number of Dispatchers
// may deliver from one outbox.
type Dispatcher struct {
	store     outbox.Store
	endpoints []*endpoint
	schedule  []time.Duration
	max       int
	timeout   time.Duration
	lease     time.Duration
	poll      time.Duration
	retention time.Duration
	client    *http.Client
	now       func() time.Time
	log       *slog.Logger

	wake   chan struct{} // a slot was freed, or a retry is due soon
	purged atomic.Int64  // Unix nanoseconds of the last purge

	attempts, delivered, failed, dead, lost, storeErrors atomic.Uint64
}

// New returns a Dispatcher of the events of store. Bad Options give an
// error wrapping apikey.ErrInvalidOptions. They are no endpoint, two with
// one name, a URL that is not absolute http(s), or a malformed secret (or
// none). So are a negative value, a Lease not longer than Timeout, and a
// wait in Schedule that is not positive. New starts nothing, Run does.
func New(store outbox.Store, opts Options) (*Dispatcher, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: webhook: %s", apikey.ErrInvalidOptions, fmt.Sprintf(format, args...))
	}
	if store == nil {
		return nil, bad("nil store")
	}
	if len(opts.Endpoints) == 0 {
		return nil, bad("no endpoint")
	}
	d := &Dispatcher{
		store: store, schedule: slices.Clone(opts.Schedule), max: opts.MaxAttempts, timeout: opts.Timeout,
		lease: opts.Lease, poll: opts.Poll, retention: opts.Retention, client: opts.Client, now: opts.Now,
		log: opts.Logger, wake: make(chan struct{}, 1),
	}
	for i, e := range opts.Endpoints {
		name := e.Name
		if name == "" {
			name = outbox.DefaultEndpoint
		}
		if slices.ContainsFunc(d.endpoints, func(o *endpoint) bool { return o.name == name }) {
			return nil, bad("endpoint name %q used twice", name)
		}
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, bad("endpoint %q: the URL must be absolute http or https", name)
		}
		keys, err := parseSecrets(e.Secrets)
		if err != nil {
			return nil, fmt.Errorf("%w: webhook: endpoint %q: %w", apikey.ErrInvalidOptions, name, err)
		}
		if e.Concurrency < 0 {
			return nil, bad("endpoint %d: negative Concurrency", i)
		}
		n := e.Concurrency
		if n == 0 {
			n = defaultConcurrency
		}
		d.endpoints = append(d.endpoints, &endpoint{name: name, url: e.URL, keys: keys, slots: make(chan struct{}, n)})
	}
	if d.schedule == nil {
		d.schedule = DefaultSchedule()
	}
	for _, w := range d.schedule {
		if w <= 0 {
			return nil, bad("a wait of Schedule is not positive")
		}
	}
	if len(d.schedule) == 0 {
		return nil, bad("empty Schedule")
	}
	if d.max < 0 || d.timeout < 0 || d.lease < 0 || d.poll < 0 {
		return nil, bad("negative MaxAttempts, Timeout, Lease or Poll")
	}
	if d.max == 0 {
		d.max = len(d.schedule) + 1
	}
	if d.timeout == 0 {
		d.timeout = defaultTimeout
	}
	if d.lease == 0 {
		d.lease = max(defaultLease, 2*d.timeout)
	}
	if d.lease <= d.timeout {
		return nil, bad("Lease %v must be longer than Timeout %v", d.lease, d.timeout)
	}
	if d.poll == 0 {
		d.poll = defaultPoll
	}
	switch {
	case d.retention == 0:
		d.retention = defaultRetention
	case d.retention < 0:
		d.retention = 0
	}
	if d.client == nil {
		// Keep a connection for every attempt an endpoint may have in
		// flight: with net/http's default of 2 idle connections per host,
		// the others would be closed after each answer and dialled again.
		idle := 0
		for _, e := range d.endpoints {
			idle = max(idle, cap(e.slots))
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = max(idle, tr.MaxIdleConnsPerHost)
		d.client = &http.Client{Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if d.now == nil {
		d.now = time.Now
	}
	return d, nil
}

// Run delivers until ctx is done, then waits for the attempts in flight
// to end (they are cancelled with ctx, and their events released to be
// retried at once) and returns ctx.Err(). It asks the outbox for due
// events every Options.Poll, sooner when a slot frees up while events
// wait, and purges settled events older than Options.Retention once an
// hour.
func (d *Dispatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-d.wake:
		}
		full, _ := d.round(ctx, &wg)
		d.purge(ctx)
		wait := d.poll
		if full {
			wait = min(wait, 50*time.Millisecond) // a backlog: come back as soon as slots free up
		}
		t.Reset(wait)
	}
}

// Poll delivers the events due now. It claims those of every endpoint, as
// many as the endpoint has free slots, delivers them and waits for the
// attempts to end. It goes on in rounds until no endpoint has more due. It
// returns how many attempts it made. Use it instead of Run to drive
// delivery yourself (a cron job, a test with its own clock).
func (d *Dispatcher) Poll(ctx context.Context) (int, error) {
	before := d.attempts.Load()
	for ctx.Err() == nil {
		var wg sync.WaitGroup
		full, err := d.round(ctx, &wg)
		wg.Wait()
		if err != nil {
			return int(d.attempts.Load() - before), err
		}
		if !full {
			break
		}
	}
	return int(d.attempts.Load() - before), ctx.Err()
}

// round claims and starts the due events of each endpoint, within its
// free slots. It reports whether an endpoint filled its slots, and the
// first failure of a claim.
func (d *Dispatcher) round(ctx context.Context, wg *sync.WaitGroup) (full bool, first error) {
	for _, ep := range d.endpoints {
		free := cap(ep.slots) - int(ep.inflight.Load())
		if free <= 0 {
			full = true
			continue
		}
		now := d.now()
		claim := newClaim()
		evs, err := d.claim(ctx, ep.name, claim, now, free)
		if err != nil {
			if ctx.Err() == nil {
				d.storeFailed(ctx, "claim", err)
				first = cmp.Or(first, err)
			}
			continue
		}
		full = full || len(evs) == free
		for _, e := range evs {
			ep.slots <- struct{}{}
			ep.inflight.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					ep.inflight.Add(-1)
					<-ep.slots
					select {
					case d.wake <- struct{}{}:
					default:
					}
				}()
				d.deliver(ctx, ep, e)
			}()
		}
	}
	return full, first
}

// claim calls Store.Claim, turning a panic into an error.
func (d *Dispatcher) claim(ctx context.Context, endpoint, claim string, now time.Time, n int) (evs []outbox.Event, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("webhook: claim panicked: %v", r)
		}
	}()
	return d.store.Claim(ctx, endpoint, claim, now, now.Add(d.lease), n)
}

// newClaim returns a random claim token.
func newClaim() string {
	b := make([]byte, 16)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}

// deliver makes one attempt to deliver e to ep and records its outcome.
func (d *Dispatcher) deliver(ctx context.Context, ep *endpoint, e outbox.Event) {
	r := outbox.Result{ID: e.ID, Endpoint: e.Endpoint, Claim: e.Claim}
	status, retryAfter, err := d.send(ctx, ep, &e)
	r.At = d.now()
	switch {
	case err == nil && status >= 200 && status <= 299:
		r.State = outbox.Delivered
	case ctx.Err() != nil: // this instance is stopping: another takes it at once
		r.State, r.Next, r.Error = outbox.Pending, r.At, "abandoned: the dispatcher stopped"
	case status == http.StatusGone:
		r.State, r.Error = outbox.Dead, "410 Gone: the endpoint wants no more webhooks"
	default:
		r.Error = failure(status, err)
		if e.Attempts >= d.max {
			r.State = outbox.Dead
		} else {
			r.State, r.Next = outbox.Pending, r.At.Add(max(d.backoff(e.Attempts), retryAfter))
		}
	}
	serr := d.record(ctx, r, e.LeaseUntil)
	switch {
	case errors.Is(serr, outbox.ErrLost):
		d.lost.Add(1)
		d.logf(ctx, slog.LevelWarn, "webhook: outcome not recorded: the lease was lost", e, slog.String("outcome", string(r.State)))
		return
	case serr != nil:
		d.storeFailed(ctx, "settle", serr)
		return
	}
	switch r.State {
	case outbox.Delivered:
		d.delivered.Add(1)
		d.logf(ctx, slog.LevelDebug, "webhook: delivered", e)
	case outbox.Dead:
		d.dead.Add(1)
		d.logf(ctx, slog.LevelError, "webhook: event dead after its last attempt", e, slog.String("error", r.Error))
	default:
		if r.Error != "" && ctx.Err() == nil {
			d.failed.Add(1)
			d.logf(ctx, slog.LevelWarn, "webhook: attempt failed", e, slog.String("error", r.Error), slog.Time("next", r.Next))
		}
		if wait := r.Next.Sub(r.At); wait < d.poll && ctx.Err() == nil {
			time.AfterFunc(wait, func() {
				select {
				case d.wake <- struct{}{}:
				default:
				}
			})
		}
	}
}

// record settles r, even if ctx ended (a delivery recorded as such is not
// sent again), trying again a few times after a failure, within the
// lease: an outcome not recorded makes the event be sent again once the
// lease ends.
func (d *Dispatcher) record(ctx context.Context, r outbox.Result, lease time.Time) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.timeout)
	defer cancel()
	wait := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := d.settle(ctx, r)
		if err == nil || errors.Is(err, outbox.ErrLost) || attempt == settleAttempts || !d.now().Add(wait).Before(lease) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// settleAttempts is how many times record tries to settle an outcome.
const settleAttempts = 4

// settle calls Store.Settle, turning a panic into an error.
func (d *Dispatcher) settle(ctx context.Context, r outbox.Result) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("webhook: settle panicked: %v", p)
		}
	}()
	return d.store.Settle(ctx, r)
}

// send makes the request of one attempt and returns the answer's status
// and Retry-After, or the error that stopped it.
func (d *Dispatcher) send(ctx context.Context, ep *endpoint, e *outbox.Event) (int, time.Duration, error) {
	if !d.now().Before(e.LeaseUntil) {
		return 0, 0, errors.New("the lease ended before the attempt")
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.url, strings.NewReader(string(e.Payload)))
	if err != nil {
		return 0, 0, err
	}
	ts := strconv.FormatInt(d.now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "gokeys-apikey-webhook/1")
	req.Header.Set(HeaderID, e.ID)
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, signature(ep.keys, e.ID, ts, e.Payload))
	d.attempts.Add(1)
	resp, err := d.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold a credential
		}
		return 0, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	resp.Body.Close()
	var after time.Duration
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			after = min(time.Duration(s)*time.Second, 24*time.Hour)
		}
	}
	return resp.StatusCode, after, nil
}

// failure describes a failed attempt for Event.LastError.
func failure(status int, err error) string {
	if err != nil {
		return outbox.Trunc(err.Error())
	}
	return strconv.Itoa(status) + " " + http.StatusText(status)
}

// backoff is the wait after the attempts-th failed attempt, with jitter.
func (d *Dispatcher) backoff(attempts int) time.Duration {
	w := d.schedule[min(max(attempts, 1), len(d.schedule))-1]
	return w - w/5 + time.Duration(rand.Int64N(int64(w)*2/5+1))
}

// purge deletes settled events older than the retention, at most once
// per purgeEvery.
func (d *Dispatcher) purge(ctx context.Context) {
	if d.retention == 0 {
		return
	}
	now := d.now()
	last := d.purged.Load()
	if last != 0 && now.UnixNano()-last < int64(purgeEvery) || !d.purged.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	for {
		n, err := d.store.PurgeEvents(ctx, now.Add(-d.retention), purgeBatch)
		if err != nil {
			d.storeFailed(ctx, "purge", err)
			return
		}
		if n < purgeBatch {
			return
		}
	}
}

// storeFailed counts and logs a failed outbox call.
func (d *Dispatcher) storeFailed(ctx context.Context, op string, err error) {
	d.storeErrors.Add(1)
	if d.log != nil {
		d.log.LogAttrs(ctx, slog.LevelWarn, "webhook: outbox "+op+" failed", slog.String("error", err.Error()))
	}
}

// logf logs one line about event e.
func (d *Dispatcher) logf(ctx context.Context, level slog.Level, msg string, e outbox.Event, attrs ...slog.Attr) {
	if d.log == nil || !d.log.Enabled(ctx, level) {
		return
	}
	attrs = append([]slog.Attr{slog.String("id", e.ID), slog.String("endpoint", e.Endpoint),
		slog.String("type", e.Type), slog.Int("attempt", e.Attempts)}, attrs...)
	d.log.LogAttrs(ctx, level, msg, attrs...)
}

// Stats returns the counters of d.
func (d *Dispatcher) Stats() Stats {
	return Stats{
		Attempts: d.attempts.Load(), Delivered: d.delivered.Load(), Failed: d.failed.Load(), Dead: d.dead.Load(),
		Lost: d.lost.Load(), StoreErrors: d.storeErrors.Load(),
	}
}
