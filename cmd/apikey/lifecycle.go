package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// purgeCommand runs "apikey purge --older-than D": it deletes the keys
// revoked or expired more than D ago.
func purgeCommand(fs *flag.FlagSet) runner {
	var olderThan string
	fs.StringVar(&olderThan, "older-than", "", "delete keys revoked or expired more than this long ago, e.g. 720h or 30d (required)")
	return func(ctx context.Context, s *session, args []string) error {
		if len(args) > 0 {
			return usageError("purge takes no arguments; use --older-than")
		}
		if olderThan == "" {
			return usageError("purge needs --older-than, e.g. --older-than 30d")
		}
		retention, err := parseAge(olderThan)
		if err != nil {
			return err
		}
		before := s.m.Now().UTC().Truncate(time.Second).Add(-retention)
		n, err := s.m.Purge(ctx, retention)
		if err != nil {
			if n > 0 {
				fmt.Fprintf(s.stderr, "apikey purge: %d keys were deleted before the failure\n", n)
			}
			return err
		}
		return s.print(map[string]any{"purged": n, "older_than": retention.String(), "before": before}, func(t *table) {
			t.note(fmt.Sprintf("%d keys revoked or expired before %s deleted", n, when(before)))
		})
	}
}

// parseAge parses a duration of time.ParseDuration or a whole number of
// days ("30d"); it must not be negative.
func parseAge(v string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(v, "d"); ok {
		var n int64
		if n, err = strconv.ParseInt(days, 10, 64); err == nil && n <= 100*365 {
			d = time.Duration(n) * 24 * time.Hour
		} else if err == nil {
			err = strconv.ErrRange
		}
	} else {
		d, err = time.ParseDuration(v)
	}
	switch {
	case err != nil:
		return 0, usageError(fmt.Sprintf("--older-than %q is not a duration (e.g. 720h, 30d)", v))
	case d < 0:
		return 0, usageError("--older-than must not be negative")
	}
	return d, nil
}

// runRevokeChain runs "apikey revoke-chain ID": it revokes the key and
// every key of its rotation chain, the answer to a leaked key that was
// rotated.
func runRevokeChain(ctx context.Context, s *session, args []string) error {
	if len(args) != 1 || args[0] == "" {
		return usageError("revoke-chain takes one key id")
	}
	ids, err := s.m.RevokeChain(ctx, args[0])
	if err != nil {
		if len(ids) > 0 {
			fmt.Fprintf(s.stderr, "apikey revoke-chain: revoked before the failure: %s\n", strings.Join(ids, " "))
		}
		return err
	}
	if ids == nil {
		ids = []string{}
	}
	return s.print(map[string]any{"key": args[0], "revoked": ids}, func(t *table) {
		t.row("REVOKED")
		for _, id := range ids {
			t.row(id)
		}
		t.note(fmt.Sprintf("%d keys of the chain of %s revoked", len(ids), args[0]))
	})
}
