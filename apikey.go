// Package apikey issues, stores and verifies API keys for net/http services.
//
// A token looks like sk_live_4f8Gq2Lx9TbN0cRw<secret><checksum>: a prefix, a
// public key id, a high-entropy secret and a CRC-32 checksum. Garbage is
// rejected by the checksum before any store access, the record is found by
// its id in O(1), and the secret is checked against an HMAC-SHA-256 digest
// keyed by a server-side pepper, in constant time. Stores never see a
// token, only its digest, and nothing is written to the store on the
// request path: last-used times are coalesced and flushed in batches.
//
//	store := memstore.New()
//	m, err := apikey.New(store, apikey.Options{
//		Prefix:  "sk_live",
//		Peppers: []apikey.Pepper{{Version: "1", Secret: pepper}},
//	})
//	if err != nil { ... }
//	defer m.Close(context.Background())
//
//	token, key, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}})
//	// Show token to the user once; store nothing but key.ID.
//
//	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Realm: "api"})
//	mux.Handle("GET /data", mw.Handler(http.HandlerFunc(data)))
//	// In data: key := apikey.FromContext(r.Context())
//
// The Manager, the Middleware and every Store and Limiter of this module are
// safe for concurrent use.
package apikey

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/gokeys/apikey/outbox"
)

// Options configures a Manager. The zero value is valid and secure: the
// "sk" prefix, 256-bit secrets, SHA-256 digests (set Peppers for HMAC),
// keys that never expire, last-used times flushed every 10 seconds, usage
// counted per key and hour (with a store that implements usage.Store) and
// a verification cache of 5 seconds.
type Options struct {
	// Prefix is the token prefix, e.g. "sk_live" or "sk_test";
	// "sk" when empty. See NewFormat for its grammar.
	Prefix string

	// Prefixes are further prefixes the Manager accepts and issues (with
	// IssueParams.Prefix), e.g. "sk_test" beside a Prefix of "sk_live".
	// Every key verifies only under the prefix it was issued with.
	Prefixes []string

	// SecretBits is the entropy of a secret: 256 when 0, between 128 and
	// 512.
	SecretBits int

	// Peppers key the default HMAC-SHA-256 hasher. Peppers[0] hashes new
	// keys; the others only verify keys they hashed earlier, so a pepper
	// can be rotated. Each needs 32 bytes or more. Without peppers (and
	// without Hasher), digests are plain SHA-256, which anyone able to
	// write to the store can forge.
	Peppers []Pepper

	// Hasher replaces the default hasher, e.g. with NewBcryptHasher.
	// Peppers must be empty when Hasher is set.
	Hasher Hasher

	// Now returns the current time; time.Now when nil. Expiry, grace
	// periods and last-used times all read it.
	Now func() time.Time

	// DefaultTTL is the lifetime of keys issued without an explicit
	// expiry; 0 means they never expire.
	DefaultTTL time.Duration

	// LastUsedInterval is how often recorded uses are flushed to the store
	// with Store.MarkUsed: 10 seconds when 0, so that Key.LastUsedAt lags
	// the true last use by at most this plus one flush. A negative value
	// turns last-used tracking off.
	LastUsedInterval time.Duration

	// LastUsedQueue bounds the number of distinct keys waiting for a
	// flush or being written: 100,000 when 0. Uses of further
	// keys are dropped (and counted, see Stats) until the next flush.
	LastUsedQueue int

	// LastUsedBatch is the most keys one Store.MarkUsed call writes:
	// 1,000 when 0. A flush writes its keys in batches of
	// this size; a batch that fails is retried at the next flush without
	// holding up the others.
	LastUsedBatch int

	// LastUsedTimeout bounds each Store.MarkUsed call:
	// 5 seconds when 0, whatever LastUsedInterval is.
	// Negative LastUsedQueue, LastUsedBatch or LastUsedTimeout values are
	// refused with ErrInvalidOptions.
	LastUsedTimeout time.Duration

	// UsageInterval is how often the usage counted in memory is added
	// to the store, when the store implements usage.Store: 10 seconds
	// when 0; negative turns usage recording off. Each request that
	// reaches Middleware.Handler with a key whose secret verified is
	// counted for that key and its customer, in the UTC hour the key
	// was verified, by outcome: allowed; limited (429 from Limit);
	// refused (403 from RequireScopes or for an unconfigured plan, or 401
	// for a revoked, expired, disabled or paused key or a suspended
	// customer); with the cost Limit spent (or MiddlewareOptions.Cost
	// when Limit has no Limiter). A wrong secret or an unknown id counts
	// nothing, so nobody can inflate another's counts; a request
	// answered 5xx counts nothing either. Each Middleware.Spend call
	// counts as one request. Counting takes no lock and writes nothing
	// on the request path. Flushes write batches of LastUsedBatch
	// records, each under LastUsedTimeout, a failed batch kept for the
	// next flush without holding up the others; counts are added to the
	// stored ones, never replace them, so any number of instances may
	// flush the same key and hour. Close flushes what is pending.
	// Manager.Usage reads the stored counts by hour, day or month.
	UsageInterval time.Duration

	// UsageQueue bounds the (key, hour) counters held in memory, those
	// of the current hour and those waiting for or in a flush: 100,000
	// when 0; negative is refused with ErrInvalidOptions. Requests of
	// further keys are not counted (nor refused): Stats.UsageDropped
	// says how many, and so does a Metrics with the optional methods
	// UsageQueued and UsageFlushed (see Metrics).
	UsageQueue int

	// UsageRetention is how long stored usage is kept: 400 days when 0;
	// negative keeps it forever. The flush loop purges older hours with
	// usage.Store.PurgeUsage at most once an hour.
	UsageRetention time.Duration

	// CacheTTL is how long a verified key is served from memory without
	// asking the store: 5 seconds when 0; negative disables the cache. An
	// entry holds the record and the SHA-256 of the secret verified
	// against it, so a hit costs one SHA-256 and a map lookup: no store
	// query, no bcrypt, no allocation; expiry, revocation and suspension
	// are still checked on every verification. It is also the bound on
	// how long a revocation made through another Manager (another process)
	// can go unnoticed by this one when no Notifier tells it sooner
	// (CacheTTL+CacheStaleIfError while the store fails); revocations
	// through this Manager take effect at once.
	CacheTTL time.Duration

	// CacheNegativeTTL is how long a failed lookup (an unknown id, or a
	// known id with a wrong secret: both alike, so that an attacker learns
	// nothing from the load he causes and cannot bypass the cache) is
	// answered ErrInvalid without asking the store: one second when 0;
	// negative disables it.
	CacheNegativeTTL time.Duration

	// CacheMaxEntries bounds the cache: 100,000 entries when 0. When full,
	// an arbitrary entry is evicted for each new one.
	CacheMaxEntries int

	// CacheStaleIfError lets a key verified within CacheTTL+CacheStaleIfError
	// keep working while the store fails (a key not seen in that window
	// gets ErrUnavailable). 0, the default, never serves stale entries.
	// The trade-off: while the store fails, a key revoked, disabled or
	// rotated out through another Manager keeps working here for up to
	// CacheTTL+CacheStaleIfError unless a Notifier has told this Manager
	// (a notified change drops the entry, stale window included).
	CacheStaleIfError time.Duration

	// Plans, if set, are the plans a key or customer may have: Issue,
	// Update and SetCustomer refuse any other plan name with an
	// *InputError, and the middleware takes each customer's limits from
	// here.
	Plans Plans
	// DefaultPlan names the plan (in Plans) whose limits apply to a key
	// whose plan is not in Plans: a key without a plan, or one whose plan
	// was removed. Empty means the middleware's Limit refuses such a key
	// (403, the plan logged once): an unknown plan never means unlimited.
	DefaultPlan string

	// Customers, if set, answers the customer records (see Customer)
	// from the application's own records, for example its billing
	// tables, in place of the store's CustomerStore. It returns an error
	// wrapping ErrNotFound for a customer it has no record of (the zero
	// record applies), and any other error when it fails (verifications
	// of the customer's keys then fail with ErrUnavailable). A record
	// with an empty Plan and Revision 0 leaves each key's own Plan in
	// force. Its answers are cached for CacheTTL: call
	// Manager.CustomerChanged after changing a record. The Manager keeps
	// the record returned, so return a new one each time (Customer.Clone),
	// never one you change afterwards.
	Customers func(ctx context.Context, id string) (*Customer, error)

	// MaxKeyLifetime, if positive, bounds the life of every key: Issue
	// refuses an expiry further away (a key without one gets this
	// lifetime), Update refuses to move an expiry past CreatedAt plus it,
	// and the successor of a key without expiry gets it. 0 means no
	// bound; a DefaultTTL beyond it is refused.
	MaxKeyLifetime time.Duration

	// Notifier, if set, publishes every change this Manager makes to a key
	// and drops the cache entries of keys changed by other instances; see
	// Notifier for the resulting guarantee. Nil: other instances notice a
	// change within their cache TTL.
	Notifier Notifier

	// Metrics, if set, receives counters and latencies (see Metrics);
	// nil, the default, costs nothing. A Metrics that also has the
	// methods UsageFlushed(records int, d time.Duration, err error) and
	// UsageQueued(queued, dropped int) hears of usage recording as
	// Flushed and UsesQueued hear of last-used times.
	Metrics Metrics

	// Outbox, if set, writes an event for webhooks (see package outbox)
	// in the same atomic step as each change it reports: a key created,
	// rotated, revoked, disabled or enabled, leaked or about to expire, a
	// customer suspended; and, in bulk every UsageInterval, a customer's
	// credits low or quota exhausted, as the Limiter's answers show them.
	// The store must implement outbox.Store; package webhook delivers the
	// events. Nil writes none.
	Outbox *outbox.Policy

	// Logger, if set, is the audit trail: it receives one record per
	// change of a key (issue, rotate, update, disable, enable, revoke,
	// delete; Info level) and per verification (Debug level; failures at
	// Warn, at most one line per second per outcome, counting the ones
	// left out), each with the group "apikey" of event, key_id, owner and
	// outcome, never a token or secret; and background failures. Records
	// cost no store access. Nil logs nothing.
	Logger *slog.Logger
}

// IssueParams describes a key to issue. All fields are optional: the zero
// value issues a key under Options.Prefix with no owner, scopes, plan or
// metadata, expiring after Options.DefaultTTL (never by default).
type IssueParams struct {
	// Name is a human-readable label.
	Name string
	// Owner identifies the user or service the key belongs to.
	Owner string
	// Scopes are the permissions granted; each must be a non-empty RFC
	// 6749 scope token (printable ASCII without spaces, '"' or '\').
	Scopes []string
	// Plan names the key's rate-limit tier.
	Plan string
	// Metadata is copied onto the key.
	Metadata map[string]string
	// ExpiresAt, if set, is when the key stops working; it must be in the
	// future. It wins over TTL.
	ExpiresAt time.Time
	// Prefix is the token prefix: Options.Prefix when empty, else one of
	// Options.Prefixes.
	Prefix string
	// Limits are the key's own limits (see Key.Limits).
	Limits []Limit
	// TTL, if positive, is the key's lifetime; a negative TTL is refused
	// with an *InputError. Without ExpiresAt and TTL,
	// Options.DefaultTTL applies.
	TTL time.Duration
}

// Manager issues, verifies and manages keys in a Store. Build it with New
// (the zero value is not usable); it is safe for concurrent use. Call Close
// to flush last-used times.
type Manager struct {
	store   Store
	format  Format            // parses every accepted prefix
	formats map[string]Format // issues: one Format per accepted prefix
	hasher  Hasher
	now     func() time.Time
	ttl     time.Duration

	dummyDigest  []byte
	dummyVersion string

	scratch sync.Pool // *[MaxTokenLength]byte: material handed to the hasher
	usage   *usageRecorder
	debits  debitStats // settle.go
	meter   *meter     // nil: usage is not recorded
	cache   *cache
	fleet   *fleet
	hooks   *webhooks // outbox.go; nil: no events
	log     *slog.Logger
	metrics Metrics
	sampler logSampler // failed verifications in the log

	plans       Plans // a deep copy of Options.Plans
	defaultPlan string
	custs       *customers // nil: no customer records
	maxLifetime time.Duration

	realClock bool // now is time.Now
}

// New returns a Manager over store. It validates opts and returns an error
// wrapping ErrInvalidOptions for a nil store, a bad or repeated prefix, a secret under
// 128 bits, a short pepper, a hasher that cannot take the tokens,
// invalid Plans, a DefaultPlan not in Plans or a DefaultTTL beyond
// MaxKeyLifetime, or a negative UsageQueue. It starts one background
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
		return nil, err
	}
	if _, ok := opts.Plans[opts.DefaultPlan]; opts.DefaultPlan != "" && !ok {
		return nil, fmt.Errorf("%w: DefaultPlan %q is not in Plans", ErrInvalidOptions, opts.DefaultPlan)
	}
	m := &Manager{
		store: store, format: f, formats: formats, hasher: h, now: opts.Now, ttl: opts.DefaultTTL,
		log: opts.Logger, metrics: opts.Metrics, defaultPlan: opts.DefaultPlan,
		maxLifetime: opts.MaxKeyLifetime,
	}
	if opts.Plans != nil {
		m.plans = make(Plans, len(opts.Plans))
		for name, ls := range opts.Plans {
			m.plans[name] = append([]Limit(nil), ls...)
		}
	}
	if m.now == nil {
		m.now, m.realClock = time.Now, true
	}
	// The digest an unknown id is compared against, so that it costs the
	// same work as a wrong secret.
	_, dummy := f.New()
	if m.dummyDigest, m.dummyVersion, err = h.Hash([]byte(dummy.material)); err != nil {
		return nil, fmt.Errorf("%w: hasher: %w", ErrInvalidOptions, err)
	}
	if m.cache, err = newCache(cacheOptions{TTL: opts.CacheTTL, NegativeTTL: opts.CacheNegativeTTL, StaleIfError: opts.CacheStaleIfError, MaxEntries: opts.CacheMaxEntries}); err != nil {
		return nil, err
	}
	if m.usage, err = newUsageRecorder(store, usageOptions{
		interval: opts.LastUsedInterval, timeout: opts.LastUsedTimeout, max: opts.LastUsedQueue,
		batch: opts.LastUsedBatch, log: m.log, metrics: m.metrics,
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
	interval := opts.UsageInterval // request-path events go with the usage counts
	if m.hooks, err = newWebhooks(store, opts.Outbox, queueOptions{interval: interval, timeout: opts.LastUsedTimeout, now: m.now, log: m.log}); err != nil {
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

// Issue creates a key and returns its token and record. The token is
// returned exactly once: only its digest is stored. Show it to the user and
// forget it. Input beyond the documented limits (see MaxNameLength), an
// unknown plan (when Options.Plans is set), an invalid limit, a prefix the
// Manager does not accept, an expiry in the past or beyond
// Options.MaxKeyLifetime, or scopes outside the customer's ceiling give an
// *InputError (matching ErrInvalidInput). A key with an owner is refused
// with ErrSuspended while its customer is suspended, and with
// ErrTooManyKeys at the customer's key cap (see Customer).
func (m *Manager) Issue(ctx context.Context, p IssueParams) (string, *Key, error) {
	now := m.now().UTC().Truncate(time.Microsecond)
	f := m.formats[m.format.prefix]
	if p.Prefix != "" {
		var ok bool
		if f, ok = m.formats[p.Prefix]; !ok {
			return "", nil, &InputError{Field: "prefix", Reason: "not a prefix this Manager accepts"}
		}
	}
	k := &Key{
		Prefix: f.prefix, Name: p.Name, Owner: p.Owner, Plan: p.Plan,
		Scopes: append([]string(nil), p.Scopes...), CreatedAt: now,
		Metadata: maps.Clone(p.Metadata), Limits: slices.Clone(p.Limits),
	}
	for i := range k.Limits {
		k.Limits[i].Subject = "" // set per request, never stored
	}
	if len(k.Metadata) == 0 {
		k.Metadata = nil
	}
	if err := m.validKey(k); err != nil {
		return "", nil, err
	}
	switch {
	case !p.ExpiresAt.IsZero():
		if !p.ExpiresAt.After(now) {
			return "", nil, &InputError{Field: "expires_at", Reason: "not in the future"}
		}
		if err := validExpiry(p.ExpiresAt); err != nil {
			return "", nil, err
		}
		k.ExpiresAt = p.ExpiresAt.UTC().Truncate(time.Microsecond)
	case p.TTL < 0:
		return "", nil, &InputError{Field: "ttl", Reason: "negative"}
	case p.TTL > 0:
		k.ExpiresAt = now.Add(p.TTL)
	case m.ttl > 0:
		k.ExpiresAt = now.Add(m.ttl)
	}
	if m.maxLifetime > 0 {
		switch {
		case k.ExpiresAt.IsZero():
			k.ExpiresAt = now.Add(m.maxLifetime)
		case k.ExpiresAt.Sub(now) > m.maxLifetime:
			return "", nil, &InputError{Field: "expires_at", Reason: "beyond the maximum key lifetime"}
		}
	}
	token, err := m.issue(ctx, f, k, now)
	if err != nil {
		return "", nil, err
	}
	m.emit(ctx, event{Type: eventIssue, KeyID: k.ID, Owner: k.Owner, Time: now})
	return token, k.Clone(), nil
}

// create gives k a fresh id, secret and digest of format f, and stores it
// with save, drawing a new id if the first one happens to exist already.
func (m *Manager) create(ctx context.Context, f Format, k *Key, op string, save func(context.Context, *Key) error) (string, error) {
	for attempt := 0; ; attempt++ {
		token, t := f.New()
		digest, version, err := m.hasher.Hash([]byte(t.material))
		if err != nil {
			return "", fmt.Errorf("apikey: hash: %w: %w", ErrUnavailable, err)
		}
		k.ID, k.Hint, k.Hash, k.HashVersion = t.ID, t.Hint(), digest, version
		err = save(ctx, k)
		if err == nil {
			return token, nil
		}
		// A Rotator's ErrConflict is about the successor's id too.
		if !isConflict(err) || attempt == 2 {
			return "", storeErr(op, err)
		}
	}
}

// Get returns the key with the given id, or ErrNotFound.
func (m *Manager) Get(ctx context.Context, id string) (*Key, error) {
	k, err := m.get(ctx, id)
	if err != nil {
		return nil, storeErr("get", err)
	}
	return k, nil
}

// get reads the key id from the store. A store that answers neither a key
// nor an error is failing: that is an error, never passed on as (nil, nil).
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

// List returns a page of owner's keys ordered by ID; see Store.List.
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

// maxAttempts bounds the attempts of a conditional write (Update, Disable,
// Enable, a Revoke or Rotate without the store's capability) that keeps
// losing races with other writers.
const maxAttempts = 10

// maxOwnerPasses bounds the passes of RevokeOwner.
const maxOwnerPasses = 64

// changed forgets what m knows about key id after a write, and tells the
// other Managers of the fleet (see Notifier).
func (m *Manager) changed(ctx context.Context, id string) {
	m.cache.invalidate(id)
	m.fleet.publish(ctx, id)
}

// Update changes the key id with change, which receives a copy of the
// stored record and may set Name, Scopes, Plan, Metadata, ExpiresAt and
// Limits; a change to any other field is refused with ErrInvalidOptions.
// Values beyond the input limits (see MaxNameLength), a plan not in
// Options.Plans, a plan other than the one stored for the key's customer
// (change that with SetCustomer), scopes outside the customer's ceiling
// and an expiry beyond Options.MaxKeyLifetime give an *InputError
// (matching ErrInvalidInput). An error returned by change is returned as
// it is, and nothing is written.
//
// The write is conditional on the record not having changed since it was
// read (Key.Revision): on a lost race, change runs again on the new record,
// up to a bounded number of attempts (then the error wraps ErrConflict).
// So Update never undoes a concurrent Revoke, Rotate, Disable or Update.
// Nothing changes a revoked key: Update, Disable, Enable, Pause and
// Unpause refuse it with ErrRevoked and record nothing. An expired key
// stays expired: moving its expiry gives ErrExpired. A rotated key's
// expiry, the end of its grace period, can be moved earlier but not
// later. Update drops m's cache entry of the key and returns the updated
// key.
func (m *Manager) Update(ctx context.Context, id string, change func(*Key) error) (*Key, error) {
	if change == nil {
		return nil, fmt.Errorf("%w: nil change", ErrInvalidOptions)
	}
	return m.update(ctx, id, eventUpdate, func(k *Key) error {
		before := k.Clone()
		if err := change(k); err != nil {
			return err
		}
		return m.validChange(ctx, before, k)
	})
}

// Disable suspends the key id: verifications fail with ErrDisabled (which
// the middleware answers exactly like an invalid key) until Enable.
// Disabling is the operator's; Pause is the owner's. It writes through
// the same conditional update as Update, and a revoked key gives
// ErrRevoked. It returns the updated key.
func (m *Manager) Disable(ctx context.Context, id string) (*Key, error) {
	return m.update(ctx, id, eventDisable, func(k *Key) error { k.Disabled = true; return nil })
}

// Enable lifts Disable, not Pause. A revoked key gives ErrRevoked: it
// stays revoked. It returns the updated key.
func (m *Manager) Enable(ctx context.Context, id string) (*Key, error) {
	return m.update(ctx, id, eventEnable, func(k *Key) error { k.Disabled = false; return nil })
}

// update applies change to key id with a conditional Store.Update,
// retrying on ErrConflict, and reports the change as an event of type t.
func (m *Manager) update(ctx context.Context, id string, t eventType, change func(*Key) error) (*Key, error) {
	op := string(t)
	var err error
	for range maxAttempts {
		var k *Key
		if k, err = m.get(ctx, id); err != nil {
			return nil, storeErr(op, err)
		}
		if !k.RevokedAt.IsZero() { // nothing changes a revoked key
			return nil, fmt.Errorf("apikey: %s: %w", op, ErrRevoked)
		}
		before := m.hooks.snapshot(k)
		if err := change(k); err != nil {
			return nil, err
		}
		k.ExpiresAt = UTCMicro(k.ExpiresAt)
		if err = m.store.Update(m.hooks.updated(ctx, t, before, k, m.now()), k); err == nil {
			m.changed(ctx, id)
			m.emit(ctx, event{Type: t, KeyID: id, Owner: k.Owner, Time: m.now()})
			return k.Clone(), nil
		}
		if !isConflict(err) {
			break
		}
	}
	m.cache.invalidate(id) // a failed write may still have landed
	return nil, storeErr(op, err)
}

// validChange refuses changes Update does not allow, and checks the
// allowed fields that changed against the input limits.
func (m *Manager) validChange(ctx context.Context, before, after *Key) error {
	probe := after.Clone()
	probe.Name, probe.Scopes, probe.Plan, probe.Metadata = before.Name, before.Scopes, before.Plan, before.Metadata
	probe.ExpiresAt, probe.Limits = before.ExpiresAt, before.Limits
	if !reflect.DeepEqual(probe, before) {
		return fmt.Errorf("%w: Update may change only Name, Scopes, Plan, Metadata, ExpiresAt and Limits", ErrInvalidOptions)
	}
	scopes := !slices.Equal(after.Scopes, before.Scopes)
	plan := after.Plan != before.Plan && after.Plan != "" && m.custs != nil && m.custs.store != nil
	if m.custs != nil && (scopes || plan) {
		c, err := m.custs.read(ctx, after.Customer())
		if err != nil {
			return storeErr("update", err)
		}
		if scopes && !within(after, c) {
			return &InputError{Field: "scopes", Reason: "outside the customer's scopes"}
		}
		// As at Issue: the plan of a customer with a record is his.
		if plan && c.Revision != 0 && c.Plan != after.Plan {
			return &InputError{Field: "plan", Reason: "the plan is the customer's: change it on the customer"}
		}
	}
	if after.Name != before.Name {
		if err := validText("name", after.Name, MaxNameLength); err != nil {
			return err
		}
	}
	if after.Plan != before.Plan {
		if err := m.validPlan(after.Plan); err != nil {
			return err
		}
	}
	if !slices.Equal(after.Scopes, before.Scopes) {
		if err := validScopes(after.Scopes); err != nil {
			return err
		}
	}
	if !maps.Equal(after.Metadata, before.Metadata) {
		if err := validMetadata(after.Metadata); err != nil {
			return err
		}
	}
	if !slices.Equal(after.Limits, before.Limits) {
		if err := validKeyLimits(after.Limits); err != nil {
			return err
		}
	}
	if !after.ExpiresAt.Equal(before.ExpiresAt) {
		if err := validExpiry(after.ExpiresAt); err != nil {
			return err
		}
		// A rotated key's expiry is the end of its grace period: it may
		// end sooner, never later (nor never).
		if before.RotatedTo != "" && (after.ExpiresAt.IsZero() || after.ExpiresAt.After(before.ExpiresAt)) {
			return &InputError{Field: "expires_at", Reason: "the key was rotated: its grace period can be shortened, not extended"}
		}
		// An expired key stays expired.
		if before.Expired(m.now()) {
			return fmt.Errorf("apikey: update: %w", ErrExpired)
		}
		if m.maxLifetime > 0 && (after.ExpiresAt.IsZero() || after.ExpiresAt.Sub(before.CreatedAt) > m.maxLifetime) {
			return &InputError{Field: "expires_at", Reason: "beyond the maximum key lifetime"}
		}
	}
	return nil
}

// Revoke revokes the key with the given id, for good: no later operation
// (Update, Enable, Rotate, concurrent or not) makes it work again. It takes
// effect at once for every verification through m; other Managers over
// the same store notice within their cache TTL, or at once with a Notifier
// (see Notifier). Revoking a revoked key is not an error. The event carries the owner only when it was read anyway
// (stores without Revoker).
func (m *Manager) Revoke(ctx context.Context, id string) error {
	now := m.now().UTC().Truncate(time.Microsecond)
	owner, _, err := m.revoke(ctx, id, now)
	if err != nil {
		m.cache.invalidate(id)
		return storeErr("revoke", err)
	}
	m.changed(ctx, id)
	m.emit(ctx, event{Type: eventRevoke, KeyID: id, Owner: owner, Time: now})
	return nil
}

// revoke revokes key id at now: with the store's Revoker, or with a
// conditional Update retried on conflict. It returns the owner when it
// read the key, and whether it found the key already revoked.
func (m *Manager) revoke(ctx context.Context, id string, now time.Time) (owner string, already bool, err error) {
	if !storable(id) {
		return "", false, ErrNotFound
	}
	if r, ok := m.store.(Revoker); ok {
		if m.hooks == nil {
			return "", false, r.Revoke(ctx, id, now)
		}
		k, err := m.get(ctx, id) // what key.revoked describes
		if err != nil || !k.RevokedAt.IsZero() {
			return "", err == nil, err
		}
		return k.Owner, false, r.Revoke(m.hooks.revoked(ctx, k, now), id, now)
	}
	for range maxAttempts {
		var k *Key
		if k, err = m.get(ctx, id); err != nil {
			return "", false, err
		}
		if !k.RevokedAt.IsZero() {
			return k.Owner, true, nil
		}
		k.RevokedAt = now
		if err = m.store.Update(m.hooks.revoked(ctx, k, now), k); err == nil || !isConflict(err) {
			return k.Owner, false, err
		}
	}
	return "", false, err
}

// RevokeOwner revokes every key of owner (the answer to a leak) and returns
// the ids it revoked, with one event per key.
//
// It works in passes (one Revoker.RevokeOwner call, or a List of every page and a
// Revoke of each unrevoked key) and repeats them until a pass revokes
// nothing. Guarantees when it returns nil: every key of owner that existed
// when it was called, and every successor made by a Rotate that ran
// concurrently, is revoked (a rotation needs an unrevoked key, and each
// pass sees the successors of the keys the previous pass revoked); and no
// rotation of a revoked key can ever succeed afterwards. A key created by a
// concurrent plain Issue that is stored after the final pass may survive:
// revoke it, or stop issuing to the owner first. When keys of owner keep
// being created, it gives up after a bounded number of passes with an
// error wrapping ErrConflict.
func (m *Manager) RevokeOwner(ctx context.Context, owner string) ([]string, error) {
	if !storable(owner) {
		return nil, nil // no key has this owner: Issue refuses it
	}
	now := m.now().UTC().Truncate(time.Microsecond)
	var all []string
	for range maxOwnerPasses {
		ids, err := m.revokeOwnerPass(ctx, owner, now)
		for _, id := range ids {
			m.cache.invalidate(id)
		}
		if len(ids) > 0 {
			m.fleet.publish(ctx, ids...)
		}
		for _, id := range ids {
			m.emit(ctx, event{Type: eventRevoke, KeyID: id, Owner: owner, Time: now})
		}
		all = append(all, ids...)
		if err != nil {
			return all, storeErr("revoke owner", err)
		}
		if len(ids) == 0 {
			return all, nil
		}
	}
	return all, fmt.Errorf("apikey: revoke owner: %w: keys kept being created during %d passes", ErrConflict, maxOwnerPasses)
}

// revokeOwnerPass revokes the unrevoked keys of owner it sees and returns
// their ids.
func (m *Manager) revokeOwnerPass(ctx context.Context, owner string, now time.Time) ([]string, error) {
	if r, ok := m.store.(Revoker); ok && m.hooks == nil { // with events, key by key: each with its key.revoked
		return r.RevokeOwner(ctx, owner, now)
	}
	var ids []string
	for opts := (ListOptions{Limit: MaxListLimit}); ; {
		page, err := m.store.List(ctx, owner, opts)
		if err != nil {
			return ids, err
		}
		for _, k := range page {
			if !k.RevokedAt.IsZero() {
				continue
			}
			_, already, err := m.revoke(ctx, k.ID, now)
			switch {
			case errors.Is(err, ErrNotFound): // deleted meanwhile
			case err != nil:
				return ids, err
			case !already:
				ids = append(ids, k.ID)
			}
		}
		if len(page) < opts.PageSize() {
			return ids, nil
		}
		opts.After = page[len(page)-1].Cursor()
	}
}

// Delete removes the key with the given id from the store; prefer Revoke,
// which keeps the record for audits. Its event carries no owner.
func (m *Manager) Delete(ctx context.Context, id string) error {
	if !storable(id) {
		return fmt.Errorf("apikey: delete: %w", ErrNotFound)
	}
	err := m.store.Delete(m.hooks.deleted(ctx, id), id)
	if err != nil {
		m.cache.invalidate(id)
		return storeErr("delete", err)
	}
	m.changed(ctx, id)
	m.emit(ctx, event{Type: eventDelete, KeyID: id, Time: m.now()})
	return nil
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
