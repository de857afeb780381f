package apikey

import (
	"context"
	"time"

	"github.com/gokeys/apikey/usage"
)

// defaultLastUsedGranularity is the resolution of stored last-used times
// when Options.LastUsedGranularity is 0: a key is written at most about
// once a minute, whatever the number of instances that use it.
const defaultLastUsedGranularity = time.Minute

// granularity returns the recorder's resolution of stored last-used
// times from the option o: 0 when every use is to be written.
func granularity(o time.Duration) time.Duration {
	switch {
	case o == 0:
		return defaultLastUsedGranularity
	case o < 0:
		return 0
	}
	return o
}

// fresh reports whether k's stored last use, as the Manager read it, is
// already within the granularity of a use at now: stored times only move
// forward, so the store would not write this use.
func (u *usageRecorder) fresh(k *Key, now time.Time) bool {
	return !k.LastUsedAt.IsZero() && now.Sub(k.LastUsedAt) < u.granularity
}

// markUsedIn writes one batch of uses to the store: with
// usage.LastUsedStore.MarkUsedGranular when the store has it and a
// granularity is set, else with Store.MarkUsed. It returns the keys
// written, as the store reports them (every key of the batch for
// MarkUsed, which reports nothing).
func (u *usageRecorder) markUsedIn(ctx context.Context, uses map[string]time.Time) (int, error) {
	if ls, ok := u.store.(usage.LastUsedStore); ok && u.granularity > 0 {
		return ls.MarkUsedGranular(ctx, uses, u.granularity)
	}
	return len(uses), u.store.MarkUsed(ctx, uses)
}
