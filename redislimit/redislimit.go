// Package redislimit is an limits.Limiter shared through Redis: rates by
// GCRA, quotas per UTC calendar window and credits, decided for all
// servers of an application at once.
//
// Pick it when more than one process serves the same keys: a customer's
// limit then holds across all of them. For a single process (or tests)
// memlimit needs no server; it also serves as the fallback while Redis is
// unreachable.
//
// Each Allow is one round trip: an EVALSHA of a Lua script (EVAL when the
// server lost the script, after which EVALSHA works again) that reads the
// time with Redis's TIME, reads the state of each limit of the call,
// decides every limit, and, only when all limits allow, writes each new
// state with its expiry. A call whose only limit is a rate runs a shorter
// script, with one key and three arguments, that reads and writes the
// same key and value. The servers' own clocks do not matter. Time is
// counted in integer microseconds. Peek runs a script that only reads;
// Debit one that adds a cost known after the response to the quotas and
// credits of the call, without an admission check.
//
// # Storage
//
// Each (subject, limit) has a Redis string of its own, so that a call
// reads and writes only the keys of its limits (and, once, the string of
// the previous release: see Upgrading): its cost does not depend on the
// subject's history, such as the credits of every key a customer ever
// had. The key is named from the call's subject, the limit's kind
// and name and the limit's own Subject only (a customer or key id, never
// a secret):
//
//	<prefix>{<subject>}<kind><length of name>:<name>
//	<prefix>{<subject>}<kind><length of name>:<name>:<limit Subject>
//
// where kind is r, q or c (rate, quota, credits), and '%', '{' and '}' in
// the subject are written %25, %7B and %7D. The braces are the subject's
// hash tag: a Redis Cluster routes all keys of a subject, hence of a call,
// to one slot. No two distinct (subject, kind, name, Subject) share a key.
// For example, with the default prefix:
//
//	apikey:rl:{acme}r10:per-second   "1773489600100000:1773489600000000"
//	apikey:rl:{acme}q5:daily          "1773532800:17"
//	apikey:rl:{acme}c7:credits:AbC123 "0:3"
//
// A rate holds its theoretical arrival time and the time of the call that
// wrote it (Unix µs) and expires when it is whole again; a quota, or
// credits refilled each day or month, holds its window's end (Unix s) and
// the count spent in it and expires at the end of the window. A limit's
// state is found again only under the same call subject: with the
// middleware's default subject, a key's owner, which never changes for a
// key and its rotations. Changing MiddlewareOptions.LimitKey starts every
// limit afresh, credits included.
//
// # Durability of credits
//
// Credits that are never refilled hold window end 0. Their key expires
// Options.CreditsTTL (by default two years) after their last spend, each
// spend renewing it: credits left unspent for that long are forgotten,
// and granted again in full. Beyond that, their durability is Redis's:
// its persistence, replication and eviction policy are the operator's
// (use noeviction or a volatile-* policy, never allkeys-*).
//
// # Upgrading from one key per subject
//
// The previous release kept all limits of a subject in one string,
// <prefix>{<subject>}, and counted a plan's credits per key lineage (a
// limit Subject); this one counts a plan's credits per customer and a
// key's own credits per lineage. So that a deploy refills no credits, a
// call whose credits have no key yet starts them, in the same script,
// from that legacy string: credits without a limit Subject from the sum
// of what the subject and each of its lineages spent of credits of that
// name, credits with a limit Subject from what that Subject spent. Only
// the counts of the current window are carried (credits never refilled
// have one window), and at most the credits' count. Quotas and rates are
// not carried: they start afresh, and would be whole again within their
// window anyway.
//
// The legacy string is read only when a call's credits have no key, and
// Allow then writes their key, even when it denies, as does a Debit of a
// non-zero amount; Peek and a Debit of 0 write nothing. A call thus reads
// it once per credits of a subject, and again only if their key expires
// (CreditsTTL without a spend). It is never written nor deleted, so that
// instances of the previous release keep working during a rolling deploy.
// While both releases run, each counts in its own keys: a customer may
// spend a quota or rate up to its limit once per release, and credits
// spent by old instances after the new key was written are not seen by
// new ones. A subject holding '%', '{' or '}' has its legacy string in
// another hash slot: its credits are not carried.
//
// # Redis Cluster
//
// All keys of a call share the subject's hash tag: a call is one script on
// one shard. While a shard's master fails over, calls for its slots fail
// with apikey.ErrUnavailable (a refused connection, CLUSTERDOWN or the
// deadline), and the middleware's failure policy decides; no call is
// answered from a replica. After a failed call the Limiter asks a
// *redis.ClusterClient to reload the cluster's layout, so that calls reach
// the promoted replica at once. Replication is asynchronous: a crash of a
// master can lose the spends of the calls in flight, which are then
// admitted again; a handover (CLUSTER FAILOVER) loses none.
// docs/scale.md gives the measured figures, the bounds and the server
// settings (cluster-require-full-coverage no).
//
// # Clients
//
// It works with Redis 5 and later (and compatible servers) on one node,
// with Sentinel or in a Cluster, through any redis.UniversalClient. A
// client for a limiter should fail fast, and honour the deadline the
// middleware gives each call (LimitOptions.Timeout, behind a
// circuit breaker), so that a dead or hung server costs a request
// milliseconds:
//
//	client := redis.NewClient(&redis.Options{
//		Addr:                  addr,
//		ContextTimeoutEnabled: true, // honour LimitOptions.Timeout
//		DialTimeout:           100 * time.Millisecond,
//		DialerRetries:         1, // one dial: a refused connection fails at once
//		ReadTimeout:           50 * time.Millisecond,
//		WriteTimeout:          50 * time.Millisecond,
//		PoolTimeout:           50 * time.Millisecond,
//		MaxRetries:            -1, // no retries: the middleware's breaker and failure policy take over
//	})
package redislimit

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/gcra"
	"github.com/gokeys/apikey/limits"
	"github.com/gokeys/apikey/redislimit/internal/storage"
)

// DefaultPrefix is the default of Options.Prefix.
const DefaultPrefix = "apikey:rl:"

// DefaultCreditsTTL is the default of Options.CreditsTTL: two years.
const DefaultCreditsTTL = 2 * 365 * 24 * time.Hour

//go:embed limit.lua
var scriptSource string

//go:embed debit.lua
var debitSource string

//go:embed rate.lua
var rateSource string

// nlimits defines, for storage.Legacy, the number of limits of a call of
// limit.lua or debit.lua: two arguments each after two.
const nlimits = "local nlimits = (#ARGV - 2) / 2\n"

// Options configures a Limiter. The zero value is valid.
type Options struct {
	// Prefix starts every storage key. It must not contain '{' or '}',
	// which would change the Cluster hash tag. Default DefaultPrefix.
	Prefix string

	// CreditsTTL is how long the state of credits that are never
	// refilled is kept after their last spend; credits left unspent for
	// that long are forgotten, and granted again in full. It is rounded
	// up to a millisecond. Zero means DefaultCreditsTTL; negative is an
	// error.
	CreditsTTL time.Duration
}

// Limiter is an limits.Limiter on Redis. Create it with New; the zero value
// is not usable. It is safe for concurrent use, and any number of Limiters,
// in any number of processes, may share one Redis deployment and prefix.
type Limiter struct {
	client    redis.UniversalClient
	cluster   *redis.ClusterClient // client, when it is one
	prefix    string
	creditsMS int64
	allow     script
	peek      script
	debit     script
	rate      script // Allow of a single rate
	peekRate  script // Peek of a single rate
}

// script is a Lua script and its SHA-1, for EVALSHA.
type script struct {
	hash, src string
}

func newScript(src string) script {
	return script{hash: redis.NewScript(src).Hash(), src: src}
}

var (
	_ limits.Limiter = (*Limiter)(nil)
	_ limits.Peeker  = (*Limiter)(nil)
	_ limits.Debiter = (*Limiter)(nil)
)

// New returns a Limiter storing its state through client. It reports an
// error wrapping apikey.ErrInvalidOptions when client is nil, the prefix
// holds '{' or '}' or CreditsTTL is negative. It does not contact Redis.
func New(client redis.UniversalClient, opts Options) (*Limiter, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: redislimit: nil client", apikey.ErrInvalidOptions)
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("%w: redislimit: prefix %q contains '{' or '}'", apikey.ErrInvalidOptions, prefix)
	}
	ttl := opts.CreditsTTL
	switch {
	case ttl < 0:
		return nil, fmt.Errorf("%w: redislimit: CreditsTTL %v is negative", apikey.ErrInvalidOptions, ttl)
	case ttl == 0:
		ttl = DefaultCreditsTTL
	}
	cluster, _ := client.(*redis.ClusterClient)
	return &Limiter{
		client:    client,
		cluster:   cluster,
		prefix:    prefix,
		creditsMS: int64((ttl + time.Millisecond - 1) / time.Millisecond),
		allow:     newScript("local peek = false\n" + nlimits + storage.Window + storage.Legacy + scriptSource),
		peek:      newScript("local peek = true\n" + nlimits + storage.Window + storage.Legacy + scriptSource),
		debit:     newScript(nlimits + storage.Window + storage.Legacy + debitSource),
		rate:      newScript("local peek = false\n" + rateSource),
		peekRate:  newScript("local peek = true\n" + rateSource),
	}, nil
}

// Allow takes cost from every limit in limits for subject in one round
// trip; see limits.Limiter.
//
// It reports an error wrapping apikey.ErrInvalidOptions when subject is
// empty, cost is below 1, a limit is invalid (limits.Limit.Validate, whose
// bounds keep the script's arithmetic exact) or two limits share a name
// and Subject. It reports an error wrapping
// apikey.ErrUnavailable (and the cause, such as a network error or ctx's
// error) when Redis fails; a denial is never an error.
//
// A cost above a limit's capacity (its burst for a rate, its count for a
// quota or credits) can never be allowed: it is denied with RetryAfter
// equal to Reset, which for a rate is at least one emission interval.
// Rates have microsecond resolution: the emission interval period/count is
// rounded up to a whole microsecond, so a limit is never more permissive
// than configured.
func (l *Limiter) Allow(ctx context.Context, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	if err := limits.ValidateAllow(subject, ls, cost); err != nil {
		return limits.Result{}, fmt.Errorf("redislimit: %w", err)
	}
	if len(ls) == 1 && ls[0].Kind == limits.KindRate {
		return l.runRate(ctx, l.rate, subject, &ls[0], cost)
	}
	return l.run(ctx, l.allow, subject, ls, cost)
}

// Peek reports what Allow with a cost of 1 would answer for subject and
// limits, in one round trip that writes nothing; see limits.Peeker.
// It reports the errors Allow reports.
func (l *Limiter) Peek(ctx context.Context, subject string, ls []limits.Limit) (limits.Result, error) {
	if err := limits.ValidateAllow(subject, ls, 1); err != nil {
		return limits.Result{}, fmt.Errorf("redislimit: %w", err)
	}
	if len(ls) == 1 && ls[0].Kind == limits.KindRate {
		return l.runRate(ctx, l.peekRate, subject, &ls[0], 1)
	}
	return l.run(ctx, l.peek, subject, ls, 1)
}

// Debit takes amount from every quota and credits in limits for subject,
// without an admission check, atomically, in one round trip; see
// limits.Debiter. A negative amount refunds, never below what was used in
// the current window, and a balance may fall below zero (down to -2^52).
// Rates are not debited: their state is reported as it stands. It
// reports the errors Allow reports, and an error wrapping
// apikey.ErrInvalidOptions for an amount beyond ±(10^14-1).
//
// The script writes only the keys of the call's quotas and credits, with
// the expiries Allow gives them: a quota's debt ends with its window, a
// debt of credits never refilled is kept CreditsTTL after the debit.
// Credits without a key start from the previous release's string (see
// Upgrading).
func (l *Limiter) Debit(ctx context.Context, subject string, ls []limits.Limit, amount int64) (limits.Result, error) {
	if err := limits.ValidateAllow(subject, ls, 1); err != nil {
		return limits.Result{}, fmt.Errorf("redislimit: %w", err)
	}
	if err := gcra.CheckAmount(amount); err != nil {
		return limits.Result{}, fmt.Errorf("redislimit: %w: %w", limits.ErrInvalid, err)
	}
	return l.run(ctx, l.debit, subject, ls, amount)
}

// run runs sc (Allow's, Peek's or Debit's) for a call whose arguments
// are valid; cost is Debit's amount.
func (l *Limiter) run(ctx context.Context, sc script, subject string, ls []limits.Limit, cost int64) (limits.Result, error) {
	if len(ls) == 0 {
		return limits.Result{Allowed: true}, nil
	}
	keys := l.keys(subject, ls)
	legacy := l.legacyKey(subject, ls)
	nkeys := len(keys)
	if legacy != "" {
		nkeys++
	}
	args := make([]any, 3, 3+nkeys+2+2*len(ls))
	args[2] = nkeys
	for _, k := range keys {
		args = append(args, k)
	}
	if legacy != "" {
		args = append(args, legacy)
	}
	args = append(args, cost, l.creditsMS)
	for i := range ls {
		lim := &ls[i]
		if lim.Kind == limits.KindRate {
			t, burst := gcra.GCRA(lim.Count, lim.Period, lim.Burst, time.Microsecond)
			args = append(args, t, burst)
		} else {
			args = append(args, -lim.Count, int64(lim.Window))
		}
	}
	vals, err := l.eval(ctx, sc, args)
	if err != nil {
		return limits.Result{}, err
	}
	// allowed, index of the tightest limit (from 1), remaining, reset,
	// retry, then remaining, reset, retry of each limit.
	if len(vals) != 5+3*len(ls) || vals[1] < 1 || vals[1] > int64(len(ls)) {
		return limits.Result{}, fmt.Errorf("%w: redislimit: unexpected script reply %v", apikey.ErrUnavailable, vals)
	}
	res := limits.Result{
		Allowed:   vals[0] == 1,
		Limit:     ls[vals[1]-1],
		Remaining: vals[2],
		Reset:     time.Duration(vals[3]) * time.Microsecond,
		States:    make([]limits.State, len(ls)),
	}
	if !res.Allowed {
		res.RetryAfter = time.Duration(vals[4]) * time.Microsecond
	}
	for i := range res.States {
		v := vals[5+3*i:]
		res.States[i] = limits.State{Remaining: v[0], Reset: time.Duration(v[1]) * time.Microsecond, RetryAfter: time.Duration(v[2]) * time.Microsecond}
	}
	return res, nil
}

// runRate runs sc, rate.lua (Allow's or Peek's), for a valid call
// whose only limit is the rate lim.
func (l *Limiter) runRate(ctx context.Context, sc script, subject string, lim *limits.Limit, cost int64) (limits.Result, error) {
	t, burst := gcra.GCRA(lim.Count, lim.Period, lim.Burst, time.Microsecond)
	vals, err := l.eval(ctx, sc, []any{nil, nil, 1, storage.Key(l.prefix, subject, lim), cost, t, burst})
	if err != nil {
		return limits.Result{}, err
	}
	// allowed, remaining, reset, retry.
	if len(vals) != 4 {
		return limits.Result{}, fmt.Errorf("%w: redislimit: unexpected script reply %v", apikey.ErrUnavailable, vals)
	}
	res := limits.Result{
		Allowed:   vals[0] == 1,
		Limit:     *lim,
		Remaining: vals[1],
		Reset:     time.Duration(vals[2]) * time.Microsecond,
		States:    []limits.State{{Remaining: vals[1], Reset: time.Duration(vals[2]) * time.Microsecond, RetryAfter: time.Duration(vals[3]) * time.Microsecond}},
	}
	if !res.Allowed {
		res.RetryAfter = res.States[0].RetryAfter
	}
	return res, nil
}

// eval runs sc with args, whose first two elements it fills and whose
// third is the number of keys, by EVALSHA, and by EVAL when the server
// lost the script; after which EVALSHA works again. It reads the reply, an
// array of integers, without boxing each.
func (l *Limiter) eval(ctx context.Context, sc script, args []any) ([]int64, error) {
	args[0], args[1] = "evalsha", sc.hash
	cmd := redis.NewIntSliceCmd(ctx, args...)
	cmd.SetFirstKeyPos(3)
	err := l.client.Process(ctx, cmd)
	if err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")) {
		args[0], args[1] = "eval", sc.src
		cmd = redis.NewIntSliceCmd(ctx, args...)
		cmd.SetFirstKeyPos(3)
		err = l.client.Process(ctx, cmd)
	}
	if err != nil {
		if l.cluster != nil {
			// A master that died answers no MOVED, and go-redis keeps
			// its layout (for a minute by default): ask it to reload now,
			// so that calls reach the slot's new master as soon as a
			// replica has taken over. Reloads run one at a time, at most
			// one per 200 ms.
			l.cluster.ReloadState(ctx)
		}
		return nil, fmt.Errorf("%w: redislimit: %w", apikey.ErrUnavailable, err)
	}
	return cmd.Val(), nil
}

// keys names the state of each limit of a call for subject, in one hash
// slot: see the package documentation.
func (l *Limiter) keys(subject string, ls []limits.Limit) []string {
	return storage.Keys(l.prefix, subject, ls)
}

// legacyKey returns the key of the previous release for a call holding
// credits that may be carried from it, or "": see storage.LegacyKey.
func (l *Limiter) legacyKey(subject string, ls []limits.Limit) string {
	return storage.LegacyKey(l.prefix, subject, ls)
}
