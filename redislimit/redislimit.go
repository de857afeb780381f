// Package redislimit is an apikey.Limiter shared through Redis: rates by
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
// time with Redis's TIME, reads the subject's state with one GET, decides
// every limit of the call, and, only when all limits allow, writes the new
// state with its expiry in one SET. The servers' own clocks do not matter.
// Time is counted in integer microseconds.
//
// All limits of one call live in one Redis string, named from the call's
// subject only (a customer or key id, never a secret), and hash-tagged by
// it, so that a Redis Cluster routes it by the subject and the script
// touches one hash slot:
//
//	<prefix>{<subject>}
//
// It holds a newline, then one line per limit:
//
//	<entry>=<tat>                    a rate's theoretical arrival time, Unix µs
//	<entry>=<window end>:<used>      a quota's or credits' window end (Unix s) and count
//
// where the entry is the limit's name, or, for a limit with its own
// Subject (credits counted per key while the call's subject is the
// customer), "<name>@<kind><Subject>" (kind r, q or c), for example
// "\nper-second=1773489600100000\ndaily=1773532800:1\ncalls@cAbC123=0:17\n".
// A limit's state is thus found again only under the same call subject:
// with the middleware's default subject, a key's owner, which never
// changes for a key and its rotations. Changing MiddlewareOptions.LimitKey
// starts every limit afresh, credits included.
//
// Credits that are never refilled have window end 0 and never expire, nor
// does the string that holds them: redislimit keeps credits in Redis, and
// their durability is Redis's (its persistence, replication and eviction
// policy: use noeviction or volatile-* policies, never allkeys-*).
//
// Entries of limits that a call does not name are kept while they matter,
// so that call sites with different limits for one subject do not reset
// each other, and are dropped once expired. The window of a quota is
// stored in the value, not in the key name, because it comes from Redis's
// clock inside the script while every key a script touches must be named
// by the caller.
//
// It works with Redis 5 and later (and compatible servers) on one node,
// with Sentinel or in a Cluster, through any redis.UniversalClient. A
// client for a limiter should fail fast, and the middleware bounds each
// call anyway (MiddlewareOptions.LimiterTimeout and its circuit breaker):
//
//	client := redis.NewClient(&redis.Options{
//		Addr:         addr,
//		DialTimeout:  100 * time.Millisecond,
//		ReadTimeout:  50 * time.Millisecond,
//		WriteTimeout: 50 * time.Millisecond,
//		MaxRetries:   -1, // a retry would only add latency to a denial
//		PoolTimeout:  50 * time.Millisecond,
//	})
package redislimit

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/limits"
)

// DefaultPrefix is the default of Options.Prefix.
const DefaultPrefix = "apikey:rl:"

//go:embed limit.lua
var scriptSource string

// Options configures a Limiter. The zero value is valid.
type Options struct {
	// Prefix starts every storage key. It must not contain '{' or '}',
	// which would change the Cluster hash tag. Default DefaultPrefix.
	Prefix string
}

// Limiter is an apikey.Limiter on Redis. Create it with New; the zero value
// is not usable. It is safe for concurrent use, and any number of Limiters,
// in any number of processes, may share one Redis deployment and prefix.
type Limiter struct {
	client redis.UniversalClient
	prefix string
	script *redis.Script
}

var _ apikey.Limiter = (*Limiter)(nil)

// New returns a Limiter storing its state through client. It reports an
// error wrapping apikey.ErrInvalidOptions when client is nil or the prefix
// holds '{' or '}'. It does not contact Redis.
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
	return &Limiter{client: client, prefix: prefix, script: redis.NewScript(scriptSource)}, nil
}

// Allow takes cost from every limit in limits for subject in one round
// trip; see apikey.Limiter.
//
// It reports an error wrapping apikey.ErrInvalidOptions when subject is
// empty, cost is below 1, a limit is invalid (apikey.Limit.Validate, whose
// bounds keep the script's arithmetic exact), a subject holds a newline or
// two limits share a name and Subject. It reports an error wrapping
// apikey.ErrUnavailable (and the cause, such as a network error or ctx's
// error) when Redis fails; a denial is never an error.
//
// A cost above a limit's capacity (its burst for a rate, its count for a
// quota or credits) can never be allowed: it is denied with RetryAfter
// equal to Reset, which for a rate is at least one emission interval.
// Rates have microsecond resolution: the emission interval period/count is
// rounded up to a whole microsecond, so a limit is never more permissive
// than configured.
func (l *Limiter) Allow(ctx context.Context, subject string, ls []apikey.Limit, cost int64) (apikey.LimitResult, error) {
	if err := validate(subject, ls, cost); err != nil {
		return apikey.LimitResult{}, err
	}
	if len(ls) == 0 {
		return apikey.LimitResult{Allowed: true}, nil
	}

	args := make([]any, 1, 1+3*len(ls))
	args[0] = cost
	for i := range ls {
		lim := &ls[i]
		// The script finds a limit's entry by "\n<entry>=".
		pat := "\n" + lim.Name + "="
		if lim.Subject != "" {
			// The kind's initial (r, q or c) tells the kinds apart.
			pat = "\n" + lim.Name + "@" + lim.Kind.String()[:1] + lim.Subject + "="
		}
		if lim.Kind == apikey.KindRate {
			t, burst := limits.GCRA(lim.Count, lim.Period, lim.Burst, time.Microsecond)
			args = append(args, pat, t, burst)
		} else {
			args = append(args, pat, -lim.Count, int64(lim.Window))
		}
	}
	keys := []string{l.prefix + "{" + subject + "}"}

	vals, err := l.script.Run(ctx, l.client, keys, args...).Int64Slice()
	if err != nil {
		return apikey.LimitResult{}, fmt.Errorf("%w: redislimit: %w", apikey.ErrUnavailable, err)
	}
	// allowed, index of the tightest limit (from 1), remaining, reset,
	// retry, then remaining, reset, retry of each limit.
	if len(vals) != 5+3*len(ls) || vals[1] < 1 || vals[1] > int64(len(ls)) {
		return apikey.LimitResult{}, fmt.Errorf("%w: redislimit: unexpected script reply %v", apikey.ErrUnavailable, vals)
	}
	res := apikey.LimitResult{
		Allowed:   vals[0] == 1,
		Limit:     ls[vals[1]-1],
		Remaining: vals[2],
		Reset:     time.Duration(vals[3]) * time.Microsecond,
		States:    make([]apikey.LimitState, len(ls)),
	}
	if !res.Allowed {
		res.RetryAfter = time.Duration(vals[4]) * time.Microsecond
	}
	for i := range res.States {
		v := vals[5+3*i:]
		res.States[i] = apikey.LimitState{Remaining: v[0], Reset: time.Duration(v[1]) * time.Microsecond, RetryAfter: time.Duration(v[2]) * time.Microsecond}
	}
	return res, nil
}

// validate checks the arguments of Allow, and that no Subject holds a
// newline (the script's entries are lines).
func validate(subject string, ls []apikey.Limit, cost int64) error {
	if err := apikey.ValidateAllow(subject, ls, cost); err != nil {
		return fmt.Errorf("redislimit: %w", err)
	}
	for i := range ls {
		if strings.ContainsRune(ls[i].Subject, '\n') {
			return fmt.Errorf("%w: redislimit: limit %q: Subject contains a newline", apikey.ErrInvalidOptions, ls[i].Name)
		}
	}
	return nil
}
