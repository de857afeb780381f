// Package redislimit is an apikey.Limiter shared through Redis: rates by
// GCRA and quotas per UTC calendar window, decided for all servers of an
// application at once.
//
// Pick it when more than one process serves the same keys: a customer's
// limit then holds across all of them. For a single process (or tests)
// memlimit needs no server.
//
// Each Allow is one round trip: an EVALSHA of a Lua script (EVAL when the
// server lost the script, after which EVALSHA works again) that reads the
// time with Redis's TIME, reads the key id's state with one GET, decides
// every limit of the call, and, only when all limits allow, writes the new
// state with its expiry in one SET ... PX. It replies with the tightest limit
// only. The servers' own clocks do not matter. Time is counted in integer
// microseconds.
//
// All limits of one key id live in one Redis string, named from the key id
// only, never from a secret, and hash-tagged by it (a Redis Cluster routes
// it by the key id):
//
//	<prefix>{<key id>}
//
// It holds a newline, then one line per limit:
//
//	<limit name>=<tat>                    a rate's theoretical arrival time, Unix µs
//	<limit name>=<window end>:<used>      a quota's window end (Unix s) and count
//
// for example "\nper-second=1773489600100000\ndaily=1773532800:1\n", so that
// the script finds a limit by a plain search for "\n<limit name>=". A rate
// and a quota may share a name; the ':' tells them apart. Limit names must
// therefore not contain a newline (Allow rejects them); they may contain
// '=' or ':' (a name ends at the last '=' of its line). Entries of limits
// that a call does not name are kept while they matter, so that call sites
// with different limits for one key id do not reset each other, and are
// dropped once expired: a rate's at its theoretical arrival time, a
// quota's at the end of its window. The key expires with its last entry.
//
// The window of a quota is stored in the value, not in the key name,
// because it comes from Redis's clock inside the script while every key a
// script touches must be named by the caller (Redis Cluster routes by the
// declared keys).
//
// It works with Redis 5 and later (and compatible servers) on one node,
// with Sentinel or in a Cluster, through any redis.UniversalClient.
package redislimit

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gokeys/apikey"
)

// DefaultPrefix is the default of Options.Prefix.
const DefaultPrefix = "apikey:rl:"

// maxExact bounds a rate's burst times its emission interval in
// microseconds, so that Lua's doubles hold the script's numbers exactly.
const maxExact = int64(1) << 50

// maxCount bounds a quota's count, which the script turns into a string
// with Lua's 14 significant digits.
const maxCount = int64(100_000_000_000_000)

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

// Allow takes cost from every limit in limits for keyID in one round trip;
// see apikey.Limiter.
//
// It reports an error wrapping apikey.ErrInvalidOptions when keyID is
// empty, cost is below 1, a limit is invalid, a limit name contains a
// newline, two limits share a name, or a limit exceeds what the script
// computes exactly (a rate's burst times period/count in microseconds of
// 2^50 or more, a quota count of 10^14 or more). It reports an error
// wrapping apikey.ErrUnavailable (and the cause, such as a network error or
// ctx's error) when Redis fails; a denial is never an error.
//
// A cost above a limit's capacity (its burst for a rate, its count for a
// quota) can never be allowed: it is denied with RetryAfter equal to Reset,
// which for a rate is at least one emission interval. Rates have microsecond
// resolution: the emission interval period/count is rounded up to a whole
// microsecond, so a limit is never more permissive than configured.
func (l *Limiter) Allow(ctx context.Context, keyID string, limits []apikey.Limit, cost int64) (apikey.LimitResult, error) {
	if keyID == "" {
		return apikey.LimitResult{}, fmt.Errorf("%w: redislimit: empty key id", apikey.ErrInvalidOptions)
	}
	if err := validate(limits, cost); err != nil {
		return apikey.LimitResult{}, err
	}
	if len(limits) == 0 {
		return apikey.LimitResult{Allowed: true}, nil
	}

	args := make([]any, 1, 1+3*len(limits))
	args[0] = cost
	for i := range limits {
		lim := &limits[i]
		// The script finds a limit's entry by "\n<name>=".
		pat := "\n" + lim.Name + "="
		if lim.Kind == apikey.KindRate {
			t, burst := gcra(lim)
			args = append(args, pat, t, burst)
		} else {
			args = append(args, pat, -lim.Count, int64(lim.Window))
		}
	}
	keys := []string{l.prefix + "{" + keyID + "}"}

	vals, err := l.script.Run(ctx, l.client, keys, args...).Int64Slice()
	if err != nil {
		return apikey.LimitResult{}, fmt.Errorf("%w: redislimit: %w", apikey.ErrUnavailable, err)
	}
	// allowed, index of the tightest limit (from 1), remaining, reset,
	// retry.
	if len(vals) != 5 || vals[1] < 1 || vals[1] > int64(len(limits)) {
		return apikey.LimitResult{}, fmt.Errorf("%w: redislimit: unexpected script reply %v", apikey.ErrUnavailable, vals)
	}
	res := apikey.LimitResult{
		Allowed:   vals[0] == 1,
		Limit:     limits[vals[1]-1],
		Remaining: vals[2],
		Reset:     time.Duration(vals[3]) * time.Microsecond,
	}
	if !res.Allowed {
		res.RetryAfter = time.Duration(vals[4]) * time.Microsecond
	}
	return res, nil
}

// gcra returns a rate's emission interval in microseconds, rounded up, and
// its burst.
func gcra(lim *apikey.Limit) (t, burst int64) {
	ns := (int64(lim.Period) + lim.Count - 1) / lim.Count
	t = (ns + 999) / 1000
	burst = lim.Burst
	if burst == 0 {
		burst = lim.Count
	}
	return t, burst
}

// validate checks the arguments of Allow.
func validate(limits []apikey.Limit, cost int64) error {
	if cost < 1 {
		return fmt.Errorf("%w: redislimit: cost %d is below 1", apikey.ErrInvalidOptions, cost)
	}
	for i := range limits {
		lim := &limits[i]
		if err := lim.Validate(); err != nil {
			return fmt.Errorf("redislimit: %w", err)
		}
		if strings.ContainsRune(lim.Name, '\n') {
			return fmt.Errorf("%w: redislimit: limit name %q contains a newline", apikey.ErrInvalidOptions, lim.Name)
		}
		switch lim.Kind {
		case apikey.KindRate:
			if t, burst := gcra(lim); burst >= maxExact/t {
				return fmt.Errorf("%w: redislimit: limit %q: burst times period/count is too long", apikey.ErrInvalidOptions, lim.Name)
			}
		case apikey.KindQuota:
			if lim.Count >= maxCount {
				return fmt.Errorf("%w: redislimit: limit %q: count is too large", apikey.ErrInvalidOptions, lim.Name)
			}
		}
		for j := range i {
			if limits[j].Name == lim.Name {
				return fmt.Errorf("%w: redislimit: limit name %q used twice", apikey.ErrInvalidOptions, lim.Name)
			}
		}
	}
	return nil
}
