package apikey

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gokeys/apikey/internal/fastclock"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/outbox"
)

// Options configures a Manager. The zero value is valid and secure. It
// gives the "sk" prefix, 256-bit secrets and SHA-256 digests (set Peppers
// for HMAC). Keys never expire, last-used times are flushed every 10
// seconds, and usage is counted per key and hour when the store
// implements usage.Store. Verified keys are cached for 5 seconds.
type Options struct {
	// Prefix is the token prefix, e.g. "sk_live" or "sk_test". It is
	// "sk" when empty. See NewFormat for its grammar.
	Prefix string

	// Prefixes are further prefixes the Manager accepts and issues (with
	// IssueParams.Prefix), e.g. "sk_test" beside a Prefix of "sk_live".
	// Every key verifies only under the prefix it was issued with.
	Prefixes []string

	// SecretBits is the entropy of a secret, between 128 and 512. It is
	// 256 when 0.
	SecretBits int

	// Peppers key the default HMAC-SHA-256 hasher. Peppers[0] hashes new
	// keys. The others only verify keys they hashed earlier, so that a
	// pepper can be rotated. Each needs 32 bytes or more. Without peppers
	// and without Hasher, digests are plain SHA-256, which anyone able to
	// write to the store can forge.
	Peppers []Pepper

	// Hasher replaces the default hasher, e.g. with NewBcryptHasher.
	// Peppers must be empty when Hasher is set.
	Hasher Hasher

	// Now returns the current time. It is time.Now when nil. Expiry, grace
	// periods and last-used times all read it.
	Now func() time.Time

	// DefaultTTL is the lifetime of keys issued without an explicit
	// expiry. With 0 they never expire.
	DefaultTTL time.Duration

	// LastUsedInterval is how often recorded uses are flushed to the store
	// with Store.MarkUsed, 10 seconds when 0. Key.LastUsedAt lags the true
	// last use by at most this plus one flush. A negative value turns
	// last-used tracking off.
	LastUsedInterval time.Duration

	// LastUsedQueue bounds the number of distinct keys waiting for a
	// flush or being written, 100,000 when 0. Uses of further keys are
	// dropped (and counted, see Stats) until a flush writes some. While
	// the store fails, queued keys wait, and a new use only moves a queued
	// key's time, so no use of them is lost.
	LastUsedQueue int

	// LastUsedBatch is the most keys one Store.MarkUsed call writes, 1,000
	// when 0. A flush writes its keys in batches of this size. A batch
	// that fails is retried at the next flush without holding up the
	// others.
	LastUsedBatch int

	// LastUsedTimeout bounds each Store.MarkUsed call, 5 seconds when 0,
	// whatever LastUsedInterval is. Negative LastUsedQueue, LastUsedBatch
	// or LastUsedTimeout values are refused with ErrInvalidOptions.
	LastUsedTimeout time.Duration

	// LastUsedGranularity is the resolution of stored last-used times,
	// one minute when 0. Negative writes every use a flush holds. A key
	// whose stored LastUsedAt is within it of a new use is not written
	// again. A fleet thus writes a busy key about once per granularity,
	// whatever its number of instances. The Manager skips the uses it
	// knows to be that fresh. A store that implements usage.LastUsedStore
	// (memstore and sqlstore do) skips the others in its conditional
	// write. Key.LastUsedAt then lags the last use by at most
	// LastUsedGranularity plus LastUsedInterval plus one flush.
	LastUsedGranularity time.Duration

	// UsageInterval is how often the usage counted in memory is added to
	// the store, when the store implements usage.Store. It is 10 seconds
	// when 0, and negative turns usage recording off.
	//
	// Each request that reaches Middleware.Handler with a key whose
	// secret verified is counted for that key and its customer, in the
	// UTC hour the key was verified. It counts as allowed, as limited (429
	// from Limit) or as refused (403 from RequireScopes or for an
	// unconfigured plan, or 401 for a key or customer in a refused state).
	// The cost Limit spent is added, or MiddlewareOptions.Cost when Limit
	// has no Limiter. A wrong secret or an unknown id counts nothing, so
	// nobody can inflate another's counts. A request answered 5xx counts
	// nothing either. Each Middleware.Spend call counts as one request.
	//
	// Counting takes no lock and writes nothing on the request path.
	// Flushes write batches of LastUsedBatch records, each under
	// LastUsedTimeout. A failed batch is kept for the next flush without
	// holding up the others. Counts are added to the stored ones and never
	// replace them, so any number of instances may flush the same key and
	// hour. Close flushes what is pending. Manager.Usage reads the stored
	// counts by hour, day or month.
	UsageInterval time.Duration

	// UsageQueue bounds the (key, hour) counters held in memory, those of
	// the current hour and those waiting for or in a flush. It is 100,000
	// when 0, and negative is refused with ErrInvalidOptions. Requests of
	// further keys are neither counted nor refused. Stats.UsageDropped
	// says how many there were, and so does a Metrics with the optional
	// methods UsageQueued and UsageFlushed (see Metrics).
	UsageQueue int

	// UsageRetention is how long stored usage is kept, 400 days when 0.
	// Negative keeps it forever. The flush loop purges older hours with
	// usage.Store.PurgeUsage at most once an hour.
	UsageRetention time.Duration

	// CacheTTL is how long a verified key is served from memory without
	// asking the store. It is 5 seconds when 0, and negative disables the
	// cache. An entry holds the record and the SHA-256 of the secret
	// verified against it. A hit thus costs one SHA-256 and a map lookup,
	// with no store query, no bcrypt and no allocation. Expiry, revocation
	// and suspension are still checked on every verification.
	//
	// CacheTTL also bounds how long a revocation made through another
	// Manager (another process) can go unnoticed here when no Notifier
	// tells sooner. While the store fails, the bound is
	// CacheTTL+CacheStaleIfError. Revocations through this Manager take
	// effect at once.
	CacheTTL time.Duration

	// CacheNegativeTTL is how long a failed lookup is answered ErrInvalid
	// without asking the store, one second when 0. Negative disables it.
	// An unknown id and a known id with a wrong secret are remembered
	// alike, so that an attacker learns nothing from the load he causes
	// and cannot bypass the cache.
	CacheNegativeTTL time.Duration

	// CacheMaxEntries bounds the cache, 100,000 entries when 0. When it is
	// full, an arbitrary entry is evicted for each new one.
	CacheMaxEntries int

	// CacheStaleIfError lets a key verified within
	// CacheTTL+CacheStaleIfError keep working while the store fails. A key
	// not seen in that window gets ErrUnavailable. 0, the default, never
	// serves stale entries. This is a trade-off. While the store fails, a
	// key revoked, disabled or rotated out through another Manager keeps
	// working here for up to CacheTTL+CacheStaleIfError, unless a
	// Notifier has told this Manager. A notified change drops the entry,
	// stale window included.
	CacheStaleIfError time.Duration

	// Plans, if set, are the plans a key or customer may have. Issue,
	// Update and SetCustomer refuse any other plan name with an
	// *InputError. The middleware takes each customer's limits from here.
	Plans limits.Plans
	// DefaultPlan names the plan (in Plans) whose limits apply to a key
	// whose plan is not in Plans, such as a key without a plan or one
	// whose plan was removed. When it is empty, the middleware's Limit
	// refuses such a key with 403 and logs the plan once. An unknown plan
	// never means unlimited.
	DefaultPlan string

	// Customers, if set, answers the customer records (see Customer) from
	// the application's own records, for example its billing tables, in
	// place of the store's CustomerStore. For a customer it has no record
	// of, it returns an error wrapping ErrNotFound, and the zero record
	// applies. Any other error means it failed, and verifications of the
	// customer's keys then fail with ErrUnavailable. A record with an empty
	// Plan and Revision 0 leaves each key's own Plan in force.
	//
	// Its answers are cached for CacheTTL. Call Manager.CustomerChanged
	// after changing a record. The Manager keeps the record returned, so
	// return a new one each time (Customer.Clone), never one you change
	// afterwards.
	Customers func(ctx context.Context, id string) (*Customer, error)

	// MaxKeyLifetime, if positive, bounds the life of every key. Issue
	// refuses an expiry further away, and a key without one gets this
	// lifetime. Update refuses to move an expiry past CreatedAt plus it.
	// The successor of a key without expiry gets it. 0 means no bound. A
	// DefaultTTL beyond it is refused.
	MaxKeyLifetime time.Duration

	// Notifier, if set, publishes every change this Manager makes to a key
	// and drops the cache entries of keys changed by other instances. See
	// Notifier for the resulting guarantee. Without it, other instances
	// notice a change within their cache TTL.
	Notifier Notifier

	// Metrics, if set, receives counters and latencies (see Metrics). Nil,
	// the default, costs nothing. A Metrics that also has the methods
	// UsageFlushed(records int, d time.Duration, err error) and
	// UsageQueued(queued, dropped int) hears of usage recording as
	// Flushed and UsesQueued hear of last-used times.
	Metrics Metrics

	// Logger, if set, is the audit trail. It receives one record at Info
	// level per change of a key (issue, rotate, update, disable, enable,
	// revoke, delete). It receives one record per verification at Debug
	// level. Failures are logged at Warn, at most one line per second per
	// outcome, counting the ones left out. Each record has the group
	// "apikey" of event, key_id, owner and outcome, never a token or
	// secret. Background failures are logged too. Records cost no store
	// access. Nil logs nothing.
	Logger *slog.Logger

	// Outbox, if set, writes an event for webhooks (see package outbox)
	// in the same atomic step as each change it reports. The changes are
	// a key created, rotated, revoked, disabled or enabled, leaked or
	// about to expire, and a customer suspended. The events of the request
	// path (a customer's credits low, his quota exhausted, as the
	// Limiter's answers show them) are written in bulk every
	// UsageInterval. The store must implement outbox.Store. Package
	// webhook delivers the events. Nil writes none.
	Outbox *outbox.Policy
}

// Manager issues, verifies and manages keys in a Store. Build it with New,
// because the zero value is not usable. It is safe for concurrent use. Call
// Close to flush last-used times.
type Manager struct {
	store   Store
	format  Format            // parses every accepted prefix
	formats map[string]Format // issues: one Format per accepted prefix
	digests digests
	now     func() time.Time
	ttl     time.Duration

	usage   *usageRecorder
	debits  debitStats // stats.go
	meter   *meter     // nil: usage is not recorded
	cache   *cache
	fleet   *fleet
	hooks   *webhooks // outbox.go; nil: no events
	log     *slog.Logger
	metrics Metrics
	events  eventLog

	plans       limits.Plans // a deep copy of Options.Plans
	defaultPlan string
	custs       *customers // nil: no customer records
	maxLifetime time.Duration

	realClock bool             // now is time.Now
	reqNow    func() time.Time // the request path's clock: now, or a fastclock.Clock's when now is time.Now
}

// New returns a Manager over store. It validates opts. The error wraps
// ErrInvalidOptions for a nil store, a bad or repeated prefix, a secret
// under 128 bits or a short pepper. It does too for a hasher that cannot
// take the tokens, invalid Plans, a DefaultPlan not in Plans, a DefaultTTL
// beyond MaxKeyLifetime or a negative UsageQueue. It starts one background
// goroutine for last-used flushes, one for usage flushes when the store
// implements usage.Store and, with a Notifier, one for its subscription,
// all stopped by Close.
func New(store Store, opts Options) (*Manager, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalidOptions)
	}
	f, err := NewFormat(opts.Prefix, opts.SecretBits)
	if err != nil {
		return nil, err
	}
	formats := map[string]Format{f.prefix: f}
	if len(opts.Prefixes) > 0 {
		if f, err = f.WithPrefixes(opts.Prefixes...); err != nil {
			return nil, err
		}
		for _, p := range opts.Prefixes {
			formats[p] = f.single(p)
		}
	}
	h := opts.Hasher
	switch {
	case h != nil && len(opts.Peppers) > 0:
		return nil, fmt.Errorf("%w: set Hasher or Peppers, not both", ErrInvalidOptions)
	case len(opts.Peppers) > 0:
		if h, err = NewHMACHasher(opts.Peppers[0], opts.Peppers[1:]...); err != nil {
			return nil, err
		}
	case h == nil:
		h = sha256Hasher{}
	}
	material := IDLength + f.secretLen
	if max := maxMaterial(h); max > 0 && material > max {
		return nil, fmt.Errorf("%w: %d-character key material exceeds the hasher's %d bytes; lower SecretBits", ErrInvalidOptions, material, max)
	}
	if opts.DefaultTTL < 0 || opts.MaxKeyLifetime < 0 {
		return nil, fmt.Errorf("%w: negative DefaultTTL or MaxKeyLifetime", ErrInvalidOptions)
	}
	if opts.UsageQueue < 0 {
		return nil, fmt.Errorf("%w: negative UsageQueue", ErrInvalidOptions)
	}
	if opts.MaxKeyLifetime > 0 && opts.DefaultTTL > opts.MaxKeyLifetime {
		return nil, fmt.Errorf("%w: DefaultTTL beyond MaxKeyLifetime", ErrInvalidOptions)
	}
	if err := opts.Plans.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	if _, ok := opts.Plans[opts.DefaultPlan]; opts.DefaultPlan != "" && !ok {
		return nil, fmt.Errorf("%w: DefaultPlan %q is not in Plans", ErrInvalidOptions, opts.DefaultPlan)
	}
	m := &Manager{
		store: store, format: f, formats: formats, digests: digests{hasher: h}, now: opts.Now, ttl: opts.DefaultTTL,
		log: opts.Logger, metrics: opts.Metrics, defaultPlan: opts.DefaultPlan,
		maxLifetime: opts.MaxKeyLifetime,
	}
	if opts.Plans != nil {
		m.plans = make(limits.Plans, len(opts.Plans))
		for name, ls := range opts.Plans {
			m.plans[name] = append([]limits.Limit(nil), ls...)
		}
	}
	if m.now == nil {
		m.now, m.realClock = time.Now, true
	}
	m.reqNow = m.now
	if m.realClock {
		m.reqNow = fastclock.New().Now
	}
	m.events = eventLog{log: opts.Logger, now: m.now}
	// The digest an unknown id is compared against, so that it costs the
	// same work as a wrong secret.
	_, dummy := f.New()
	if m.digests.dummy, m.digests.dummyVersion, err = h.Hash([]byte(dummy.material)); err != nil {
		return nil, fmt.Errorf("%w: hasher: %w", ErrInvalidOptions, err)
	}
	if m.cache, err = newCache(cacheOptions{TTL: opts.CacheTTL, NegativeTTL: opts.CacheNegativeTTL, StaleIfError: opts.CacheStaleIfError, MaxEntries: opts.CacheMaxEntries}); err != nil {
		return nil, err
	}
	if m.usage, err = newUsageRecorder(store, usageOptions{
		interval: opts.LastUsedInterval, timeout: opts.LastUsedTimeout, max: opts.LastUsedQueue,
		batch: opts.LastUsedBatch, granularity: opts.LastUsedGranularity, log: m.log, metrics: m.metrics,
	}); err != nil {
		return nil, err
	}
	if m.meter, err = newMeter(store, meterOptions{
		interval: opts.UsageInterval, timeout: opts.LastUsedTimeout, retention: opts.UsageRetention,
		max: opts.UsageQueue, batch: opts.LastUsedBatch, now: m.now, log: m.log, metrics: m.metrics,
	}); err != nil {
		return nil, err
	}
	cacheOpts := cacheOptions{TTL: opts.CacheTTL, StaleIfError: opts.CacheStaleIfError, MaxEntries: opts.CacheMaxEntries}
	m.custs = newCustomers(store, opts.Customers, cacheOpts)
	// Request-path events go with the usage counts, every UsageInterval.
	if m.hooks, err = newWebhooks(store, opts.Outbox, queueOptions{interval: opts.UsageInterval, timeout: opts.LastUsedTimeout, now: m.now, log: m.log}); err != nil {
		return nil, err
	}
	m.fleet = startFleet(opts.Notifier, m.cache, m.custs, m.log)
	return m, nil
}

// Format returns the token format of m.
func (m *Manager) Format() Format { return m.format }

// Now returns the current time by m's clock (Options.Now), for callers
// that compute expiry times relative to it.
func (m *Manager) Now() time.Time { return m.now() }

// Get returns the key with the given id, or ErrNotFound.
func (m *Manager) Get(ctx context.Context, id string) (*Key, error) {
	k, err := m.get(ctx, id)
	if err != nil {
		return nil, storeErr("get", err)
	}
	return k, nil
}

// get reads the key id from the store. A store that answers neither a key
// nor an error is failing. That is an error, never passed on as (nil, nil).
func (m *Manager) get(ctx context.Context, id string) (*Key, error) {
	if !storable(id) {
		return nil, ErrNotFound
	}
	k, err := m.store.Get(ctx, id)
	if err == nil && k == nil {
		err = errors.New("store returned no key and no error")
	}
	return k, err
}

// List returns a page of owner's keys ordered by ID. See Store.List.
func (m *Manager) List(ctx context.Context, owner string, opts ListOptions) ([]*Key, error) {
	if !storable(owner) {
		return []*Key{}, nil // no key has this owner: Issue refuses it
	}
	ks, err := m.store.List(ctx, owner, opts)
	if err != nil {
		return nil, storeErr("list", err)
	}
	return ks, nil
}

// Close ends the Notifier subscription, stops the background flushes and
// writes every pending last-used time and usage count, in batches,
// retrying failed batches until ctx is done (three attempts when ctx has
// no deadline). The Manager still verifies after Close, but records no
// more uses, counts no more requests and hears of no more changes.
func (m *Manager) Close(ctx context.Context) error {
	ferr := m.fleet.close(ctx)
	uerr := m.usage.close(ctx)
	merr := m.meter.close(ctx)
	var eerr error
	if m.hooks != nil {
		eerr = m.hooks.queue.close(ctx)
	}
	return cmp.Or(uerr, merr, eerr, ferr)
}

// Invalidate drops id from m's verification cache, so that no
// verification starting after Invalidate returns uses a record read
// before. Revoke, RevokeOwner, Rotate, Delete, Update, Disable and Enable
// call it. Call it yourself when another process tells you a key changed,
// to make that change effective here at once. A Notifier does it for you.
func (m *Manager) Invalidate(id string) { m.cache.invalidate(id) }

// InvalidateAll drops m's whole verification cache, customer records
// included, so that no verification starting after it returns uses a
// record read before. Call it, for example, after a change notification
// may have been lost.
func (m *Manager) InvalidateAll() {
	m.cache.reset()
	if m.custs != nil {
		m.custs.reset()
	}
}

// Stats returns counters of m's background work.
func (m *Manager) Stats() Stats {
	s := m.usage.stats()
	m.meter.addStats(&s)
	m.fleet.addStats(&s)
	m.debits.addStats(&s)
	if m.hooks != nil {
		m.hooks.queue.addStats(&s)
	}
	return s
}
