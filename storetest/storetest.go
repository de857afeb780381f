// Package storetest is the conformance suite of apikey.Store. A Store
// implementation calls Run from one test, as below.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) apikey.Store {
//			return mystore.New(...) // a fresh, empty store
//		})
//	}
//
// Each subtest is named after one sentence of the Store contract and gets
// a fresh store from newStore. The optional capabilities (apikey.Revoker,
// apikey.Rotator, apikey.Purger, apikey.CustomerStore, usage.Store,
// usage.LastUsedStore, outbox.Store) are tested when the store has them.
//
// For an outbox.Store, the suite also delivers a Manager's events with
// webhook.Dispatcher through what must lose none of them. These are a
// crash between the change and the delivery, a receiver down for an hour
// (an injected clock), two instances delivering at once, and an instance
// killed mid-attempt. Their receiver fails, is slow and restarts. Each
// webhook id must be acknowledged exactly once.
//
// The "Race" subtests check the guarantees that only hold under
// concurrency. A revocation is final, a rotation has one winner and never
// undoes a concurrent change, no update is lost, and a customer's key cap
// holds. Many goroutines drive an apikey.Manager over the store to check
// them. They do it once with the store's optional capabilities and once
// through the plain Store interface (the Manager's fallbacks). The races
// also check that concurrent usage.Store.AddUsage calls of overlapping
// records, as the flushes of several instances make them, sum exactly.
// When the flushes of a fleet call usage.LastUsedStore.MarkUsedGranular at
// once, each key must be written once per granularity, as the counts they
// return say. Concurrent outbox claims must never share an event. Each
// race runs trials until it ran Options.Trials of them or spent
// Options.Budget, whichever comes first, but at least MinTrials. It logs
// how many it ran.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/limits"
)

// DefaultTrials is the most trials of each race when Options.Trials is 0.
const DefaultTrials = 1000

// DefaultBudget is the time each race may spend on trials when
// Options.Budget is 0.
const DefaultBudget = 5 * time.Second

// MinTrials is the fewest trials a race runs, whatever its budget (or
// Options.Trials, if lower).
const MinTrials = 100

// Options configures RunWith. The zero value runs each race for at most
// DefaultTrials trials and DefaultBudget, and at least MinTrials trials.
type Options struct {
	// Trials is the most trials of each race, DefaultTrials when 0. A
	// negative value skips the races.
	Trials int
	// Budget bounds the time of each race. Once it is spent, and MinTrials
	// trials ran, the race starts no further trial. It is DefaultBudget
	// when 0.
	Budget time.Duration
}

// Run runs the conformance suite with the default Options. newStore must
// return a fresh, empty store for each call. Register its cleanup with
// t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) apikey.Store) {
	t.Helper()
	RunWith(t, newStore, Options{})
}

// RunWith runs the conformance suite with opts.
func RunWith(t *testing.T, newStore func(t *testing.T) apikey.Store, opts Options) {
	t.Helper()
	if opts.Trials == 0 {
		opts.Trials = DefaultTrials
	}
	if opts.Budget <= 0 {
		opts.Budget = DefaultBudget
	}
	tests := []struct {
		name string
		fn   func(*testing.T, apikey.Store)
	}{
		{"CreateSetsRevisionOne", testCreateRevision},
		{"UpdateIsConditionalOnRevision", testUpdateConditional},
		{"UpdateNeverClearsRevokedAt", testUpdateKeepsRevocation},
		{"ConcurrentUpdatesOfOneRevisionHaveOneWinner", testUpdateOneWinner},
		{"MarkUsedKeepsRevision", testMarkUsedRevision},
		{"ValuesAtTheInputLimitsRoundTrip", testInputLimits},
		{"RotatorHasOneWinner", testRotatorOneWinner},
		{"CreateThenGetReturnsEveryField", testRoundTrip},
		{"CreateDuplicateIDGivesErrConflict", testConflict},
		{"GetUnknownIDGivesErrNotFound", testGetNotFound},
		{"UpdateReplacesFields", testUpdate},
		{"UpdateUnknownIDGivesErrNotFound", testUpdateNotFound},
		{"UpdateWithUnchangedValuesSucceeds", testUpdateUnchanged},
		{"IDsAndOwnersAreCaseSensitive", testCaseSensitive},
		{"UpdateNeverMovesLastUsedBackward", testUpdateLastUsed},
		{"DeleteRemovesKey", testDelete},
		{"DeleteUnknownIDGivesErrNotFound", testDeleteNotFound},
		{"ListReturnsOnlyTheOwnersKeysNewestFirst", testListOrder},
		{"ListPagesWithCursorAndLimit", testListPaging},
		{"ListPagesAcrossEqualCreationTimes", testListEqualTimes},
		{"ListPutsKeysWithoutCreationTimeLast", testListZeroCreatedAt},
		{"ListCursorIsStableWhileKeysAreAdded", testListStable},
		{"ListUsableAtSkipsRevokedAndExpiredKeys", testListUsable},
		{"ListOfUnknownOwnerIsEmpty", testListEmpty},
		{"MarkUsedOnlyMovesForward", testMarkUsed},
		{"MarkUsedIgnoresUnknownIDs", testMarkUsedUnknown},
		{"MarkUsedNeverMovesBackwardInLargeConcurrentBatches", testMarkUsedBulk},
		{"ReturnedValuesAreCopies", testCopies},
		{"TimesRoundTripInUTCToTheMicrosecond", testTimes},
		{"TimesAreTruncatedNotRounded", testTimesTruncate},
		{"ZeroTimesStayZero", testZeroTimes},
		{"ConcurrentUseIsSafe", testConcurrent},
		{"CancelledContextIsHonoured", testCancelled},
		{"RevokerSetsRevokedAtOnce", testRevoker},
		{"RevokerRevokesAllOfOneOwner", testRevokeOwner},
		{"RotatorRotatesAllOrNothing", testRotator},
		{"RotatorIsConditionalOnRevision", testRotatorConditional},
		{"RotatorEndsThePredecessorsGrace", testRotatorEndsGrace},
		{"PurgerDeletesDeadKeysInBatches", testPurger},
		{"CustomerStoreRoundTripsEveryField", testCustomerRoundTrip},
		{"CustomerStorePutIsConditionalOnRevision", testCustomerConditional},
		{"CustomerStoreListsByID", testCustomerList},
		{"CustomerStoreHonoursCancelledContext", testCustomerCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			require.NotNil(t, s, "newStore returned nil")
			tc.fn(t, s)
		})
	}
	runManagerTests(t, newStore)
	runUsageTests(t, newStore, opts)
	runOutboxTests(t, newStore, opts)
	runLastUsedTests(t, newStore, opts)
	if opts.Trials > 0 {
		runRaces(t, newStore, opts)
	}
}

// base is a fixed instant with sub-microsecond digits and a non-UTC zone.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("X", 5*3600+1800))

// NewKey returns a complete key of owner with a random id, every field set.
func NewKey(owner string) *apikey.Key {
	id := apikey.NewID()
	return &apikey.Key{
		ID: id, Prefix: "sk_test", Hint: "sk_test_..." + id[:4],
		Hash: []byte("0123456789abcdef0123456789abcdef"), HashVersion: "hmac-sha256:1",
		Name: "key " + id[:4], Owner: owner, Scopes: []string{"read", "write"}, Plan: "pro",
		Metadata:  map[string]string{"env": "test", "team": "core"},
		CreatedAt: apikey.UTCMicro(base),
		ExpiresAt: apikey.UTCMicro(base.Add(90 * 24 * time.Hour)),
		Lineage:   apikey.NewID(),
		Limits:    []limits.Limit{limits.Rate("per-second", 10, time.Second, 20), limits.Quota("daily", 1000, limits.Day)},
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("203.0.113.0/24"),
			netip.MustParsePrefix("2001:db8::/32")},
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func mustCreate(t *testing.T, s apikey.Store, k *apikey.Key) {
	t.Helper()
	require.NoError(t, s.Create(ctx(t), k))
}

func mustGet(t *testing.T, s apikey.Store, id string) *apikey.Key {
	t.Helper()
	k, err := s.Get(ctx(t), id)
	require.NoError(t, err)
	require.NotNil(t, k)
	return k
}

// assertSame compares two keys field by field, times with Equal.
func assertSame(t *testing.T, want, got *apikey.Key) {
	t.Helper()
	assert.Equal(t, want.ID, got.ID, "ID")
	assert.Equal(t, want.Prefix, got.Prefix, "Prefix")
	assert.Equal(t, want.Hint, got.Hint, "Hint")
	assert.Equal(t, want.Hash, got.Hash, "Hash")
	assert.Equal(t, want.HashVersion, got.HashVersion, "HashVersion")
	assert.Equal(t, want.Name, got.Name, "Name")
	assert.Equal(t, want.Owner, got.Owner, "Owner")
	assert.Equal(t, len(want.Scopes), len(got.Scopes), "Scopes")
	assert.Equal(t, slices.Clone(want.Scopes), slices.Clone(got.Scopes), "Scopes")
	assert.Equal(t, want.Plan, got.Plan, "Plan")
	assert.Equal(t, len(want.Metadata), len(got.Metadata), "Metadata")
	for k, v := range want.Metadata {
		assert.Equal(t, v, got.Metadata[k], "Metadata[%q]", k)
	}
	for _, tt := range []struct {
		name      string
		want, got time.Time
	}{
		{"CreatedAt", want.CreatedAt, got.CreatedAt}, {"ExpiresAt", want.ExpiresAt, got.ExpiresAt},
		{"LastUsedAt", want.LastUsedAt, got.LastUsedAt}, {"RevokedAt", want.RevokedAt, got.RevokedAt},
	} {
		assert.True(t, tt.want.Equal(tt.got), "%s: want %v, got %v", tt.name, tt.want, tt.got)
	}
	assert.Equal(t, want.RotatedFrom, got.RotatedFrom, "RotatedFrom")
	assert.Equal(t, want.RotatedTo, got.RotatedTo, "RotatedTo")
	assert.True(t, want.RotatedAt.Equal(got.RotatedAt), "RotatedAt: want %v, got %v", want.RotatedAt, got.RotatedAt)
	assert.Equal(t, want.Lineage, got.Lineage, "Lineage")
	assert.Equal(t, want.Disabled, got.Disabled, "Disabled")
	assert.Equal(t, want.Paused, got.Paused, "Paused")
	assert.Equal(t, want.Limits, got.Limits, "Limits")
	assert.Equal(t, len(want.AllowedIPs), len(got.AllowedIPs), "AllowedIPs")
	if len(want.AllowedIPs) > 0 {
		assert.Equal(t, want.AllowedIPs, got.AllowedIPs, "AllowedIPs")
	}
}

func testRoundTrip(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	k.LastUsedAt = k.CreatedAt.Add(time.Hour)
	k.RevokedAt = k.CreatedAt.Add(2 * time.Hour)
	k.RotatedFrom, k.RotatedTo = apikey.NewID(), apikey.NewID()
	k.RotatedAt = k.CreatedAt.Add(30 * time.Minute)
	k.Disabled, k.Paused = true, true
	mustCreate(t, s, k)
	got := mustGet(t, s, k.ID)
	assertSame(t, k, got)
	assert.Equal(t, int64(1), got.Revision, "Revision")

	plain := NewKey("alice")
	plain.Limits, plain.Lineage, plain.AllowedIPs = nil, "", nil
	mustCreate(t, s, plain)
	got = mustGet(t, s, plain.ID)
	assertSame(t, plain, got)
	assert.Nil(t, got.Limits, "no limits come back as nil")
	assert.Empty(t, got.AllowedIPs, "no IP ranges come back empty")
}

func testConflict(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	dup := NewKey("mallory")
	dup.ID, dup.Name = k.ID, "duplicate"
	err := s.Create(ctx(t), dup)
	require.Error(t, err)
	assert.ErrorIs(t, err, apikey.ErrConflict)
	assertSame(t, k, mustGet(t, s, k.ID))
}

func testGetNotFound(t *testing.T, s apikey.Store) {
	k, err := s.Get(ctx(t), apikey.NewID())
	assert.ErrorIs(t, err, apikey.ErrNotFound)
	assert.Nil(t, k)
}

func testUpdate(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	k.Name, k.Scopes, k.Plan = "renamed", []string{"admin"}, "free"
	k.Metadata = map[string]string{"env": "prod"}
	k.ExpiresAt = k.ExpiresAt.Add(time.Hour)
	k.RevokedAt = k.CreatedAt.Add(time.Minute)
	k.RotatedTo, k.RotatedAt, k.Lineage = apikey.NewID(), k.CreatedAt.Add(time.Second), apikey.NewID()
	k.Disabled, k.Paused = true, true
	k.Limits = []limits.Limit{limits.Quota("monthly", 5, limits.Month)}
	k.AllowedIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/26")}
	require.NoError(t, s.Update(ctx(t), k))
	assertSame(t, k, mustGet(t, s, k.ID))

	k.ExpiresAt, k.Disabled, k.Paused, k.Limits, k.AllowedIPs = time.Time{}, false, false, nil, nil
	require.NoError(t, s.Update(ctx(t), k))
	got := mustGet(t, s, k.ID)
	assert.True(t, got.ExpiresAt.IsZero(), "Update can clear ExpiresAt")
	assert.False(t, got.Disabled, "Update can enable")
	assert.False(t, got.Paused, "Update can resume")
	assert.Nil(t, got.Limits, "Update can clear Limits")
	assert.Empty(t, got.AllowedIPs, "Update can clear AllowedIPs")
}

func testCreateRevision(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	k.Revision = 7
	mustCreate(t, s, k)
	assert.Equal(t, int64(1), k.Revision, "Create sets the given key's Revision")
	assert.Equal(t, int64(1), mustGet(t, s, k.ID).Revision, "Create stores Revision 1")
}

func testUpdateConditional(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	a, b := mustGet(t, s, k.ID), mustGet(t, s, k.ID)
	a.Name = "first"
	require.NoError(t, s.Update(ctx(t), a))
	assert.Equal(t, int64(2), a.Revision, "Update sets the given key's Revision")
	assert.Equal(t, int64(2), mustGet(t, s, k.ID).Revision, "Update increments the stored Revision")

	b.Name, b.Plan = "stale", "stale"
	err := s.Update(ctx(t), b)
	require.Error(t, err, "an Update at a stale Revision must fail")
	assert.ErrorIs(t, err, apikey.ErrConflict)
	assert.NotErrorIs(t, err, apikey.ErrNotFound)
	got := mustGet(t, s, k.ID)
	assert.Equal(t, "first", got.Name, "a stale Update writes nothing")
	assert.Equal(t, k.Plan, got.Plan, "a stale Update writes nothing")
	assert.Equal(t, int64(2), got.Revision)

	b.Revision = 3 // ahead of the store is stale too
	assert.ErrorIs(t, s.Update(ctx(t), b), apikey.ErrConflict)
	assert.Equal(t, "first", mustGet(t, s, k.ID).Name)
}

func testUpdateKeepsRevocation(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	revokedAt := k.CreatedAt.Add(time.Minute)
	k.RevokedAt = revokedAt
	require.NoError(t, s.Update(ctx(t), k), "Update may set RevokedAt")
	k.RevokedAt = time.Time{}
	k.Name = "renamed"
	require.NoError(t, s.Update(ctx(t), k))
	got := mustGet(t, s, k.ID)
	assert.Equal(t, "renamed", got.Name)
	assert.True(t, revokedAt.Equal(got.RevokedAt), "Update cleared RevokedAt: %v", got.RevokedAt)
	k.RevokedAt = revokedAt.Add(time.Hour)
	require.NoError(t, s.Update(ctx(t), k))
	assert.True(t, revokedAt.Equal(mustGet(t, s, k.ID).RevokedAt), "Update moved RevokedAt")
}

func testUpdateOneWinner(t *testing.T, s apikey.Store) {
	const writers = 8
	for round := range 10 {
		k := NewKey("alice")
		mustCreate(t, s, k)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, writers)
		for w := range writers {
			c := k.Clone()
			c.Name = fmt.Sprintf("writer %d", w)
			wg.Go(func() {
				<-start
				errs[w] = s.Update(context.Background(), c)
			})
		}
		close(start)
		wg.Wait()
		won := 0
		for _, err := range errs {
			if err == nil {
				won++
			} else {
				require.ErrorIs(t, err, apikey.ErrConflict, "round %d", round)
			}
		}
		require.Equal(t, 1, won, "round %d: Updates at one Revision that succeeded", round)
		assert.Equal(t, int64(2), mustGet(t, s, k.ID).Revision)
	}
}

func testMarkUsedRevision(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	require.NoError(t, s.MarkUsed(ctx(t), map[string]time.Time{k.ID: base.Add(time.Hour)}))
	assert.Equal(t, int64(1), mustGet(t, s, k.ID).Revision)
	k.Name = "renamed"
	require.NoError(t, s.Update(ctx(t), k), "MarkUsed does not make an Update conflict")
}

// LimitsKey returns a key whose every field a caller chooses is at the
// Manager's input limits, with the characters that need escaping in JSON
// and SQL, and the latest expiry the Manager accepts.
func LimitsKey(owner string) *apikey.Key {
	k := NewKey(owner)
	k.ExpiresAt = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
	fill := func(n int, seed string) string { return strings.Repeat(seed, n/len(seed)+1)[:n] }
	k.Name = fill(apikey.MaxNameLength-2, `"'\%_<>&`) + "é"
	k.Plan = fill(apikey.MaxPlanLength, "p")
	k.Scopes = make([]string, apikey.MaxScopes)
	for i := range k.Scopes {
		k.Scopes[i] = fmt.Sprintf("%03d:", i) + fill(apikey.MaxScopeLength-4, "s<>&'")
	}
	k.Metadata = make(map[string]string, apikey.MaxMetadataEntries)
	for i := range apikey.MaxMetadataEntries {
		key := fmt.Sprintf("%02d", i) + fill(apikey.MaxMetadataKeyLength-2, `"\`)
		k.Metadata[key] = fill(apikey.MaxMetadataValueLength-3, `"\<>'`) + "€"
	}
	k.Limits = make([]limits.Limit, apikey.MaxLimits)
	for i := range k.Limits {
		k.Limits[i] = limits.Rate(fmt.Sprintf("l%02d", i)+fill(61, "a'|~:/"), 1<<40, time.Hour, 1<<41)
	}
	k.AllowedIPs = make([]netip.Prefix, apikey.MaxAllowedIPs)
	for i := range k.AllowedIPs { // the longest text: full IPv6 addresses
		k.AllowedIPs[i] = netip.MustParsePrefix(fmt.Sprintf("2001:db8:abcd:ef01:2345:6789:abcd:%04x/128", 0xff00+i))
	}
	return k
}

func testInputLimits(t *testing.T, s apikey.Store) {
	for _, owner := range []string{strings.Repeat("o", apikey.MaxOwnerLength), strings.Repeat("é", apikey.MaxOwnerLength/2)} {
		k := LimitsKey(owner)
		mustCreate(t, s, k)
		assertSame(t, k, mustGet(t, s, k.ID))
		list, err := s.List(ctx(t), owner, apikey.ListOptions{})
		require.NoError(t, err)
		require.Len(t, list, 1)
		assertSame(t, k, list[0])
		k.Name = strings.Repeat("n", apikey.MaxNameLength)
		require.NoError(t, s.Update(ctx(t), k))
		assertSame(t, k, mustGet(t, s, k.ID))
	}
}

func testRotatorOneWinner(t *testing.T, s apikey.Store) {
	r, ok := s.(apikey.Rotator)
	if !ok {
		t.Skip("store does not implement apikey.Rotator")
	}
	const rotors = 6
	for round := range 10 {
		old := NewKey("alice")
		mustCreate(t, s, old)
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, rotors)
		succs := make([]*apikey.Key, rotors)
		for w := range rotors {
			succs[w] = NewKey("alice")
			succs[w].RotatedFrom = old.ID
			wg.Go(func() {
				<-start
				errs[w] = r.Rotate(context.Background(), old.Clone(), base.Add(time.Hour), succs[w])
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for w, err := range errs {
			if err == nil {
				require.Equal(t, -1, winner, "round %d: two rotations of one key succeeded", round)
				winner = w
				continue
			}
			require.True(t, errors.Is(err, apikey.ErrRotated) || errors.Is(err, apikey.ErrConflict),
				"round %d: a losing rotation: want ErrRotated or ErrConflict, got %v", round, err)
			_, gerr := s.Get(ctx(t), succs[w].ID)
			require.ErrorIs(t, gerr, apikey.ErrNotFound, "round %d: a losing rotation stored its successor", round)
		}
		require.NotEqual(t, -1, winner, "round %d: no rotation succeeded", round)
		got := mustGet(t, s, old.ID)
		assert.Equal(t, succs[winner].ID, got.RotatedTo)
		assert.Equal(t, int64(2), got.Revision)
	}
}

func testUpdateNotFound(t *testing.T, s apikey.Store) {
	assert.ErrorIs(t, s.Update(ctx(t), NewKey("alice")), apikey.ErrNotFound)
}

func testUpdateUnchanged(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	require.NoError(t, s.Update(ctx(t), mustGet(t, s, k.ID)), "writing back what was read is not ErrNotFound")
	assertSame(t, k, mustGet(t, s, k.ID))
}

func testCaseSensitive(t *testing.T, s apikey.Store) {
	lower := NewKey("alice")
	lower.ID = "aaaaaaaaaaaaaaaa"
	upper := NewKey("Alice")
	upper.ID = "AAAAAAAAAAAAAAAA"
	mustCreate(t, s, lower)
	mustCreate(t, s, upper)
	assert.Equal(t, "alice", mustGet(t, s, lower.ID).Owner)
	assert.Equal(t, "Alice", mustGet(t, s, upper.ID).Owner)
	spaced := NewKey("alice ")
	mustCreate(t, s, spaced)
	for owner, want := range map[string]string{"alice": lower.ID, "Alice": upper.ID, "alice ": spaced.ID} {
		list, err := s.List(ctx(t), owner, apikey.ListOptions{})
		require.NoError(t, err)
		require.Len(t, list, 1, "owner %q", owner)
		assert.Equal(t, want, list[0].ID)
	}
	_, err := s.Get(ctx(t), "aaaaaaaaaaaaaaaA")
	assert.ErrorIs(t, err, apikey.ErrNotFound)
}

func testUpdateLastUsed(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	later := k.CreatedAt.Add(time.Hour)
	require.NoError(t, s.MarkUsed(ctx(t), map[string]time.Time{k.ID: later}))
	k.LastUsedAt = k.CreatedAt.Add(time.Minute) // older than stored
	k.Name = "renamed"
	require.NoError(t, s.Update(ctx(t), k))
	got := mustGet(t, s, k.ID)
	assert.Equal(t, "renamed", got.Name)
	assert.True(t, later.Equal(got.LastUsedAt), "LastUsedAt went back to %v", got.LastUsedAt)
}

func testDelete(t *testing.T, s apikey.Store) {
	k, other := NewKey("alice"), NewKey("alice")
	mustCreate(t, s, k)
	mustCreate(t, s, other)
	require.NoError(t, s.Delete(ctx(t), k.ID))
	_, err := s.Get(ctx(t), k.ID)
	assert.ErrorIs(t, err, apikey.ErrNotFound)
	mustGet(t, s, other.ID)
	list, err := s.List(ctx(t), "alice", apikey.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, other.ID, list[0].ID)
}

func testDeleteNotFound(t *testing.T, s apikey.Store) {
	assert.ErrorIs(t, s.Delete(ctx(t), apikey.NewID()), apikey.ErrNotFound)
}

// createMany creates n keys of owner, all created at the same time, and
// returns their ids in List's order (ID descending).
func createMany(t *testing.T, s apikey.Store, owner string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		k := NewKey(owner)
		mustCreate(t, s, k)
		ids[i] = k.ID
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	return ids
}

func testMarkUsed(t *testing.T, s apikey.Store) {
	a, b := NewKey("alice"), NewKey("alice")
	mustCreate(t, s, a)
	mustCreate(t, s, b)
	t1 := a.CreatedAt.Add(time.Hour)
	require.NoError(t, s.MarkUsed(ctx(t), map[string]time.Time{a.ID: t1, b.ID: t1}))
	assert.True(t, t1.Equal(mustGet(t, s, a.ID).LastUsedAt))

	earlier, later := t1.Add(-time.Minute), t1.Add(time.Minute)
	require.NoError(t, s.MarkUsed(ctx(t), map[string]time.Time{a.ID: earlier, b.ID: later}))
	assert.True(t, t1.Equal(mustGet(t, s, a.ID).LastUsedAt), "an earlier use must not move LastUsedAt back")
	assert.True(t, later.Equal(mustGet(t, s, b.ID).LastUsedAt), "a later use moves LastUsedAt forward")
	require.NoError(t, s.MarkUsed(ctx(t), nil), "an empty batch is not an error")
}

func testMarkUsedUnknown(t *testing.T, s apikey.Store) {
	a := NewKey("alice")
	mustCreate(t, s, a)
	at := a.CreatedAt.Add(time.Hour)
	require.NoError(t, s.MarkUsed(ctx(t), map[string]time.Time{apikey.NewID(): at, a.ID: at}))
	assert.True(t, at.Equal(mustGet(t, s, a.ID).LastUsedAt))
	_, err := s.Get(ctx(t), "unknown")
	assert.ErrorIs(t, err, apikey.ErrNotFound, "MarkUsed must not create keys")
}

// testMarkUsedBulk sends batches larger than a store is likely to write in
// one statement, from several goroutines at once, each batch mixing times
// before and after the stored one and unknown ids. Every key must end at
// the latest time any batch gave it, never earlier.
func testMarkUsedBulk(t *testing.T, s apikey.Store) {
	const n, workers = 2100, 4
	keys := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				k := NewKey("bulk")
				keys[i] = k.ID
				errs <- s.Create(context.Background(), k)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	start := apikey.UTCMicro(base)
	first := make(map[string]time.Time, n)
	for i, id := range keys {
		first[id] = start.Add(time.Duration(i) * time.Second)
	}
	require.NoError(t, s.MarkUsed(ctx(t), first))

	// Worker w moves key i by (w-1)*i seconds + w milliseconds: worker 0
	// only backwards, the others forwards by different amounts.
	want := make(map[string]time.Time, n)
	for i, id := range keys {
		want[id] = first[id].Add(time.Duration(workers-2)*time.Duration(i)*time.Second + (workers-1)*time.Millisecond)
	}
	want[keys[0]] = first[keys[0]].Add((workers - 1) * time.Millisecond)
	errs = make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			batch := make(map[string]time.Time, n+10)
			for i, id := range keys {
				batch[id] = first[id].Add(time.Duration(w-1)*time.Duration(i)*time.Second + time.Duration(w)*time.Millisecond)
			}
			for range 10 {
				batch[apikey.NewID()] = base
			}
			errs <- s.MarkUsed(context.Background(), batch)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	got := map[string]time.Time{}
	for opts := (apikey.ListOptions{Size: apikey.MaxPageSize}); ; {
		page, err := s.List(ctx(t), "bulk", opts)
		require.NoError(t, err)
		for _, k := range page {
			got[k.ID] = k.LastUsedAt
		}
		if len(page) < opts.PageSize() {
			break
		}
		opts.After = page[len(page)-1].Cursor()
	}
	require.Len(t, got, n, "MarkUsed must not create keys")
	wrong := 0
	for _, id := range keys {
		if !want[id].Equal(got[id]) {
			if wrong < 5 {
				t.Errorf("key %s: LastUsedAt %v, want %v", id, got[id], want[id])
			}
			wrong++
		}
	}
	assert.Zero(t, wrong, "keys whose LastUsedAt is not the latest use")
}

func testCopies(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	want := NewKey("alice")
	want.ID, want.Hint, want.Name, want.Lineage = k.ID, k.Hint, k.Name, k.Lineage
	mustCreate(t, s, k)
	// Mutate what we passed in.
	k.Name, k.Scopes[0], k.Metadata["env"], k.Hash[0] = "changed", "changed", "changed", 'X'
	assertSame(t, want, mustGet(t, s, k.ID))
	// Mutate what we got back.
	got := mustGet(t, s, k.ID)
	got.Name, got.Scopes[0], got.Metadata["env"], got.Hash[0] = "changed", "changed", "changed", 'X'
	assertSame(t, want, mustGet(t, s, k.ID))
	list, err := s.List(ctx(t), "alice", apikey.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list, 1)
	list[0].Scopes[0], list[0].Metadata["env"] = "changed", "changed"
	assertSame(t, want, mustGet(t, s, k.ID))
}

func testTimes(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	k.CreatedAt = base
	k.ExpiresAt = base.Add(time.Hour)
	k.RevokedAt = base.Add(time.Minute)
	mustCreate(t, s, k)
	used := base.Add(2 * time.Minute)
	require.NoError(t, s.MarkUsed(ctx(t), map[string]time.Time{k.ID: used}))
	got := mustGet(t, s, k.ID)
	for name, pair := range map[string][2]time.Time{
		"CreatedAt": {k.CreatedAt, got.CreatedAt}, "ExpiresAt": {k.ExpiresAt, got.ExpiresAt},
		"RevokedAt": {k.RevokedAt, got.RevokedAt}, "LastUsedAt": {used, got.LastUsedAt},
	} {
		want := apikey.UTCMicro(pair[0])
		assert.Equal(t, time.UTC, pair[1].Location(), "%s not in UTC", name)
		assert.True(t, want.Equal(pair[1]), "%s: want %v, got %v", name, want, pair[1])
	}
}

// testTimesTruncate checks that a time is truncated to the microsecond,
// never rounded (the last microsecond of a second stays in that second).
func testTimesTruncate(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	k.CreatedAt = time.Date(2026, 12, 31, 23, 59, 59, 999_999_999, time.UTC)
	k.ExpiresAt = time.Date(2027, 1, 1, 0, 0, 0, 1_500, time.FixedZone("Y", -3600))
	mustCreate(t, s, k)
	got := mustGet(t, s, k.ID)
	assert.True(t, time.Date(2026, 12, 31, 23, 59, 59, 999_999_000, time.UTC).Equal(got.CreatedAt), "CreatedAt: %v", got.CreatedAt)
	assert.True(t, time.Date(2027, 1, 1, 1, 0, 0, 1_000, time.UTC).Equal(got.ExpiresAt), "ExpiresAt: %v", got.ExpiresAt)
}

func testZeroTimes(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	k.ExpiresAt = time.Time{}
	mustCreate(t, s, k)
	got := mustGet(t, s, k.ID)
	assert.True(t, got.ExpiresAt.IsZero(), "ExpiresAt")
	assert.True(t, got.LastUsedAt.IsZero(), "LastUsedAt")
	assert.True(t, got.RevokedAt.IsZero(), "RevokedAt")
}

func testConcurrent(t *testing.T, s apikey.Store) {
	const workers, rounds = 8, 20
	shared := NewKey("alice")
	mustCreate(t, s, shared)
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds*5)
	for w := range workers {
		wg.Go(func() {
			c := context.Background()
			for i := range rounds {
				k := NewKey(fmt.Sprintf("owner-%d", w))
				errs <- s.Create(c, k)
				_, err := s.Get(c, shared.ID)
				errs <- err
				errs <- s.MarkUsed(c, map[string]time.Time{shared.ID: base.Add(time.Duration(w*rounds+i) * time.Second)})
				k.Name = "updated"
				errs <- s.Update(c, k)
				_, err = s.List(c, k.Owner, apikey.ListOptions{})
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for w := range workers {
		list, err := s.List(ctx(t), fmt.Sprintf("owner-%d", w), apikey.ListOptions{})
		require.NoError(t, err)
		assert.Len(t, list, rounds)
	}
	want := apikey.UTCMicro(base.Add(time.Duration(workers*rounds-1) * time.Second))
	assert.True(t, want.Equal(mustGet(t, s, shared.ID).LastUsedAt), "the latest use wins")
}

func testCancelled(t *testing.T, s apikey.Store) {
	k := NewKey("alice")
	mustCreate(t, s, k)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	isCancel := func(name string, err error) {
		t.Helper()
		assert.True(t, errors.Is(err, context.Canceled), "%s: want context.Canceled, got %v", name, err)
	}
	isCancel("Create", s.Create(c, NewKey("alice")))
	_, err := s.Get(c, k.ID)
	isCancel("Get", err)
	k2 := mustGet(t, s, k.ID)
	k2.Name = "changed"
	isCancel("Update", s.Update(c, k2))
	isCancel("Delete", s.Delete(c, k.ID))
	_, err = s.List(c, "alice", apikey.ListOptions{})
	isCancel("List", err)
	isCancel("MarkUsed", s.MarkUsed(c, map[string]time.Time{k.ID: base.Add(time.Hour)}))
	got := mustGet(t, s, k.ID)
	assertSame(t, k, got)
	list, err := s.List(ctx(t), "alice", apikey.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, list, 1, "a cancelled Create must not store")
}

func testRevoker(t *testing.T, s apikey.Store) {
	r, ok := s.(apikey.Revoker)
	if !ok {
		t.Skip("store does not implement apikey.Revoker")
	}
	k := NewKey("alice")
	mustCreate(t, s, k)
	at := base.Add(time.Hour)
	require.NoError(t, r.Revoke(ctx(t), k.ID, at))
	got := mustGet(t, s, k.ID)
	assert.True(t, apikey.UTCMicro(at).Equal(got.RevokedAt))
	assert.Equal(t, int64(2), got.Revision, "Revoke increments the Revision")
	require.NoError(t, r.Revoke(ctx(t), k.ID, at.Add(time.Hour)), "revoking twice is not an error")
	got = mustGet(t, s, k.ID)
	assert.True(t, apikey.UTCMicro(at).Equal(got.RevokedAt), "the first revocation time stays")
	assert.Equal(t, int64(2), got.Revision, "a second Revoke changes nothing")
	k.Name = "stale"
	assert.ErrorIs(t, s.Update(ctx(t), k), apikey.ErrConflict, "an Update read before Revoke conflicts")
	assert.ErrorIs(t, r.Revoke(ctx(t), apikey.NewID(), at), apikey.ErrNotFound)
}

func testRevokeOwner(t *testing.T, s apikey.Store) {
	r, ok := s.(apikey.Revoker)
	if !ok {
		t.Skip("store does not implement apikey.Revoker")
	}
	mine := createMany(t, s, "alice", 3)
	theirs := createMany(t, s, "bob", 2)
	already := mustGet(t, s, mine[0])
	already.RevokedAt = base
	require.NoError(t, s.Update(ctx(t), already))

	at := base.Add(time.Hour)
	got, err := r.RevokeOwner(ctx(t), "alice", at)
	require.NoError(t, err)
	assert.ElementsMatch(t, mine[1:], got, "returns the ids it revoked, not the already revoked one")
	assert.True(t, apikey.UTCMicro(base).Equal(mustGet(t, s, mine[0]).RevokedAt))
	assert.Equal(t, int64(2), mustGet(t, s, mine[0]).Revision, "an already revoked key is not written")
	for _, id := range mine[1:] {
		got := mustGet(t, s, id)
		assert.True(t, apikey.UTCMicro(at).Equal(got.RevokedAt))
		assert.Equal(t, int64(2), got.Revision, "RevokeOwner increments the Revision")
	}
	for _, id := range theirs {
		assert.True(t, mustGet(t, s, id).RevokedAt.IsZero(), "another owner's key was revoked")
	}
}

func testRotator(t *testing.T, s apikey.Store) {
	r, ok := s.(apikey.Rotator)
	if !ok {
		t.Skip("store does not implement apikey.Rotator")
	}
	old := NewKey("alice")
	mustCreate(t, s, old)
	succ := NewKey("alice")
	succ.RotatedFrom, succ.Lineage, succ.Revision = old.ID, old.ID, 9
	succ.CreatedAt = apikey.UTCMicro(base.Add(time.Minute))
	until := base.Add(time.Hour)
	require.NoError(t, r.Rotate(ctx(t), old.Clone(), until, succ))
	assert.Equal(t, int64(1), succ.Revision, "Rotate sets the successor's Revision")
	gotSucc := mustGet(t, s, succ.ID)
	assertSame(t, succ, gotSucc)
	assert.Equal(t, int64(1), gotSucc.Revision, "the successor is stored with Revision 1")
	gotOld := mustGet(t, s, old.ID)
	assert.Equal(t, succ.ID, gotOld.RotatedTo)
	assert.True(t, apikey.UTCMicro(until).Equal(gotOld.ExpiresAt))
	assert.True(t, succ.CreatedAt.Equal(gotOld.RotatedAt), "RotatedAt is the successor's CreatedAt: %v", gotOld.RotatedAt)
	assert.Equal(t, int64(2), gotOld.Revision, "Rotate increments the old key's Revision")

	t.Run("KeepsAnEarlierExpiry", func(t *testing.T) {
		k := NewKey("alice")
		k.ExpiresAt = apikey.UTCMicro(base.Add(time.Minute))
		mustCreate(t, s, k)
		require.NoError(t, r.Rotate(ctx(t), k.Clone(), base.Add(time.Hour), NewKey("alice")))
		assert.True(t, k.ExpiresAt.Equal(mustGet(t, s, k.ID).ExpiresAt), "the rotation extended the old key's life")
	})

	t.Run("AlreadyRotated", func(t *testing.T) {
		again := NewKey("alice")
		assert.ErrorIs(t, r.Rotate(ctx(t), mustGet(t, s, old.ID), until, again), apikey.ErrRotated)
		err := r.Rotate(ctx(t), old, until, again) // a stale read too
		assert.True(t, errors.Is(err, apikey.ErrRotated) || errors.Is(err, apikey.ErrConflict), "want ErrRotated or ErrConflict, got %v", err)
		_, err = s.Get(ctx(t), again.ID)
		assert.ErrorIs(t, err, apikey.ErrNotFound, "a failed rotation stores no successor")
	})
	t.Run("Revoked", func(t *testing.T) {
		k := NewKey("alice")
		k.RevokedAt = base
		mustCreate(t, s, k)
		next := NewKey("alice")
		assert.ErrorIs(t, r.Rotate(ctx(t), k.Clone(), until, next), apikey.ErrRevoked)
		_, err := s.Get(ctx(t), next.ID)
		assert.ErrorIs(t, err, apikey.ErrNotFound)
	})
	t.Run("NotFound", func(t *testing.T) {
		assert.ErrorIs(t, r.Rotate(ctx(t), NewKey("alice"), until, NewKey("alice")), apikey.ErrNotFound)
	})
	t.Run("SuccessorConflictChangesNothing", func(t *testing.T) {
		k := NewKey("alice")
		mustCreate(t, s, k)
		clash := NewKey("alice")
		clash.ID = succ.ID
		assert.ErrorIs(t, r.Rotate(ctx(t), k.Clone(), until, clash), apikey.ErrConflict)
		assertSame(t, k, mustGet(t, s, k.ID))
		assertSame(t, succ, mustGet(t, s, succ.ID))
	})
}
