package storetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
)

// plainStore hides a store's optional capabilities, so that the Manager
// takes its fallbacks (Get, Create, Delete and the conditional Update).
type plainStore struct{ apikey.Store }

// mode is a way a race's Manager sees the store.
type mode struct {
	name string
	wrap func(apikey.Store) apikey.Store
}

var (
	withCapabilities = mode{"Capabilities", func(s apikey.Store) apikey.Store { return s }}
	asPlainStore     = mode{"PlainStore", func(s apikey.Store) apikey.Store { return plainStore{s} }}
	bothModes        = []mode{withCapabilities, asPlainStore}
)

// raceEnv is what a trial works on. It holds a Manager over the store (as
// its mode shows it) and the store itself.
type raceEnv struct {
	m     *apikey.Manager
	store apikey.Store
}

// race is one guarantee checked with concurrent callers.
type race struct {
	name  string
	modes []mode
	// needs, if set, tells whether the store has what the race checks.
	needs func(apikey.Store) bool
	// trial runs one trial and returns a description of the violation
	// it saw, or "".
	trial func(t *testing.T, e raceEnv, n int) string
}

func isCustomerStore(s apikey.Store) bool { _, ok := s.(apikey.CustomerStore); return ok }

func runRaces(t *testing.T, newStore func(t *testing.T) apikey.Store, opts Options) {
	races := []race{
		{"RaceUpdateVsRevokeNeverRevives", bothModes, nil, raceUpdateRevoke},
		{"RaceRotateVsRotateHasOneWinner", bothModes, nil, raceRotateRotate},
		{"RaceRotateVsRevokeNeverRevives", bothModes, nil, raceRotateRevoke},
		{"RaceRevokeOwnerVsRotateLeavesNoLiveKey", bothModes, nil, raceRevokeOwnerRotate},
		{"RaceUpdatesAreNeverLost", bothModes, nil, raceUpdateUpdate},
		{"RaceRotateVsDisableLosesNoChange", bothModes, nil, raceRotateDisable},
		{"RaceRotateVsNarrowingUpdateLosesNoChange", bothModes, nil, raceRotateNarrow},
		{"RaceLeakReportsRevokeOnce", bothModes, nil, raceLeakReports},
		{"RaceLeakRevokeVsDisableEndsRevoked", bothModes, nil, raceLeakRevokeVsDisable},
		{"RaceCustomerWritesOfOneRevisionHaveOneWinner", []mode{withCapabilities}, isCustomerStore, raceCustomerPuts},
		{"RaceIssueKeepsTheCustomersKeyCap", []mode{withCapabilities}, isCustomerStore, raceKeyCap},
	}
	for _, r := range races {
		t.Run(r.name, func(t *testing.T) {
			for _, md := range r.modes {
				t.Run(md.name, func(t *testing.T) {
					s := newStore(t)
					if r.needs != nil && !r.needs(s) {
						t.Skip("the store lacks the capability")
					}
					m, err := apikey.New(md.wrap(s), raceOptions)
					require.NoError(t, err)
					t.Cleanup(func() { _ = m.Close(context.Background()) })
					runTrials(t, opts, func(n int) string { return r.trial(t, raceEnv{m: m, store: s}, n) })
				})
			}
		})
	}
}

// raceOptions configure the Managers of the races. They have no cache, so
// that every check reads the store.
var raceOptions = apikey.Options{Prefix: "sk_race", CacheTTL: -1, CacheNegativeTTL: -1, LastUsedInterval: -1}

// runTrials runs trial until opts.Trials trials ran or opts.Budget is
// spent (but MinTrials at least), stopping at the fifth violation, and
// logs how many ran.
func runTrials(t *testing.T, opts Options, trial func(n int) string) {
	start, violations, n := time.Now(), 0, 0
	least := min(MinTrials, opts.Trials)
	for ; n < opts.Trials && (n < least || time.Since(start) < opts.Budget); n++ {
		if v := trial(n); v != "" {
			violations++
			t.Errorf("trial %d: %s", n, v)
			if violations >= 5 {
				t.FailNow()
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	t.Logf("%d trials (at most %d, budget %v), %d violations, %v", n, opts.Trials, opts.Budget, violations,
		time.Since(start).Round(time.Millisecond))
}

// together runs fns concurrently, released at once, and waits for them.
func together(fns ...func()) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, fn := range fns {
		wg.Go(func() {
			<-start
			fn()
		})
	}
	close(start)
	wg.Wait()
}

func raceIssue(t *testing.T, m *apikey.Manager, n int) (string, *apikey.Key) {
	token, k, err := m.Issue(context.Background(), apikey.IssueParams{
		Owner: fmt.Sprintf("race-%d", n), Name: "race", Plan: "free", Scopes: []string{"read"},
	})
	require.NoError(t, err)
	return token, k
}

// mustBeRevoked reports how token still verifies, or "".
func mustBeRevoked(m *apikey.Manager, what, token string) string {
	k, err := m.Verify(context.Background(), token)
	if !errors.Is(err, apikey.ErrRevoked) {
		if err == nil {
			return fmt.Sprintf("%s %s verifies after a revocation that returned nil", what, k.ID)
		}
		return fmt.Sprintf("%s: want ErrRevoked, got %v", what, err)
	}
	return ""
}

// raceUpdateRevoke races updates, a disable and an enable against a
// revocation. The revoked key must never verify again.
func raceUpdateRevoke(t *testing.T, e raceEnv, n int) string {
	m, ctx := e.m, context.Background()
	token, k := raceIssue(t, m, n)
	var revokeErr error
	updErrs := make([]error, 4)
	update := func(i int) func() {
		return func() {
			_, updErrs[i] = m.Update(ctx, k.ID, func(k *apikey.Key) error {
				// Not the plan: with a customer record, it is the
				// customer's, and Update refuses to change it.
				k.Name = fmt.Sprintf("update %d", i)
				k.Scopes = []string{"read", fmt.Sprintf("scope-%d", i)}
				return nil
			})
		}
	}
	together(
		update(0), update(1),
		func() { _, updErrs[2] = m.Enable(ctx, k.ID) },
		func() { _, updErrs[3] = m.Disable(ctx, k.ID) },
		func() { revokeErr = m.Revoke(ctx, k.ID) },
	)
	if revokeErr != nil {
		return fmt.Sprintf("Revoke failed: %v", revokeErr)
	}
	for i, err := range updErrs {
		if err != nil && !errors.Is(err, apikey.ErrConflict) && !errors.Is(err, apikey.ErrRevoked) {
			return fmt.Sprintf("update %d failed: %v", i, err)
		}
	}
	if v := mustBeRevoked(m, "the key", token); v != "" {
		return v
	}
	// Changes after the revocation, refused or not, keep it revoked too.
	if _, err := m.Enable(ctx, k.ID); err != nil && !errors.Is(err, apikey.ErrRevoked) {
		return fmt.Sprintf("Enable of a revoked key: %v", err)
	}
	return mustBeRevoked(m, "the re-enabled key", token)
}

// raceRotateRotate races rotations of one key. Exactly one may succeed,
// leaving exactly one successor.
func raceRotateRotate(t *testing.T, e raceEnv, n int) string {
	m, ctx := e.m, context.Background()
	_, k := raceIssue(t, m, n)
	const rotors = 4
	rots := make([]*apikey.Rotation, rotors)
	errs := make([]error, rotors)
	fns := make([]func(), rotors)
	for i := range fns {
		fns[i] = func() { rots[i], errs[i] = m.Rotate(ctx, k.ID, time.Hour) }
	}
	together(fns...)
	var won *apikey.Rotation
	for i, err := range errs {
		switch {
		case err == nil && won != nil:
			return "two concurrent rotations of one key succeeded"
		case err == nil:
			won = rots[i]
		case !errors.Is(err, apikey.ErrRotated):
			return fmt.Sprintf("a losing rotation: want ErrRotated, got %v", err)
		}
	}
	if won == nil {
		return "no rotation succeeded"
	}
	keys, err := m.List(ctx, k.Owner, apikey.ListOptions{})
	require.NoError(t, err)
	if len(keys) != 2 {
		return fmt.Sprintf("%d keys after one rotation, want the old key and one successor", len(keys))
	}
	if _, err := m.Verify(ctx, won.Token); err != nil {
		return fmt.Sprintf("the winning successor does not verify: %v", err)
	}
	old, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	if old.RotatedTo != won.Key.ID {
		return fmt.Sprintf("the old key points to %q, the winner is %s", old.RotatedTo, won.Key.ID)
	}
	return ""
}

// raceRotateRevoke races a rotation against a revocation of the old key.
// The old key stays revoked, and a rotation that lost leaves no successor.
func raceRotateRevoke(t *testing.T, e raceEnv, n int) string {
	m, ctx := e.m, context.Background()
	token, k := raceIssue(t, m, n)
	var (
		rot       *apikey.Rotation
		rotErr    error
		revokeErr error
	)
	together(
		func() { rot, rotErr = m.Rotate(ctx, k.ID, time.Hour) },
		func() { revokeErr = m.Revoke(ctx, k.ID) },
	)
	if revokeErr != nil {
		return fmt.Sprintf("Revoke failed: %v", revokeErr)
	}
	if v := mustBeRevoked(m, "the old key", token); v != "" {
		return v
	}
	keys, err := m.List(ctx, k.Owner, apikey.ListOptions{})
	require.NoError(t, err)
	switch {
	case rotErr != nil && !errors.Is(rotErr, apikey.ErrRevoked):
		return fmt.Sprintf("a rotation that lost to a revocation: want ErrRevoked, got %v", rotErr)
	case rotErr != nil && len(keys) != 1:
		return fmt.Sprintf("a failed rotation left %d keys", len(keys))
	case rotErr == nil && len(keys) != 2:
		return fmt.Sprintf("a rotation left %d keys, want 2", len(keys))
	case rotErr == nil:
		if _, err := m.Verify(ctx, rot.Token); err != nil {
			return fmt.Sprintf("the successor of a rotation that won does not verify: %v", err)
		}
	}
	return ""
}

// raceRevokeOwnerRotate races RevokeOwner against a rotation of one of
// the owner's keys. Afterwards no key of the owner verifies.
func raceRevokeOwnerRotate(t *testing.T, e raceEnv, n int) string {
	m, ctx := e.m, context.Background()
	token, k := raceIssue(t, m, n)
	other, _ := raceIssue(t, m, n)
	var (
		rot       *apikey.Rotation
		rotErr    error
		revokeErr error
	)
	together(
		func() { rot, rotErr = m.Rotate(ctx, k.ID, time.Hour) },
		func() { _, revokeErr = m.RevokeOwner(ctx, k.Owner) },
	)
	if revokeErr != nil {
		return fmt.Sprintf("RevokeOwner failed: %v", revokeErr)
	}
	for what, tok := range map[string]string{"the rotated key": token, "another key of the owner": other} {
		if v := mustBeRevoked(m, what, tok); v != "" {
			return v
		}
	}
	switch {
	case rotErr == nil:
		if v := mustBeRevoked(m, "the successor of a concurrent rotation", rot.Token); v != "" {
			return v
		}
	case !errors.Is(rotErr, apikey.ErrRevoked):
		return fmt.Sprintf("a rotation that lost to RevokeOwner: want ErrRevoked, got %v", rotErr)
	}
	keys, err := m.List(ctx, k.Owner, apikey.ListOptions{})
	require.NoError(t, err)
	for _, key := range keys {
		if key.RevokedAt.IsZero() {
			return fmt.Sprintf("key %s of the owner is not revoked", key.ID)
		}
	}
	return ""
}

// raceUpdateUpdate races updates that each add one metadata entry. None
// may be lost.
func raceUpdateUpdate(t *testing.T, e raceEnv, n int) string {
	m, ctx := e.m, context.Background()
	_, k := raceIssue(t, m, n)
	const writers = 4
	errs := make([]error, writers)
	fns := make([]func(), writers)
	for i := range fns {
		fns[i] = func() {
			_, errs[i] = m.Update(ctx, k.ID, func(k *apikey.Key) error {
				if k.Metadata == nil {
					k.Metadata = map[string]string{}
				}
				k.Metadata[fmt.Sprintf("writer-%d", i)] = "done"
				return nil
			})
		}
	}
	together(fns...)
	for i, err := range errs {
		if err != nil {
			return fmt.Sprintf("update %d failed: %v", i, err)
		}
	}
	got, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	if !assert.Len(t, got.Metadata, writers, "updates were lost") {
		return fmt.Sprintf("metadata %v: an update was lost", got.Metadata)
	}
	if got.Revision != 1+writers {
		return fmt.Sprintf("revision %d after %d updates of a new key", got.Revision, writers)
	}
	return ""
}

// raceRotateDisable races a rotation against a Disable of the old key. No
// change is lost. When both succeed, the successor is disabled (the
// rotation read the key after the Disable, or the Disable reached the
// successor). Otherwise the Disable must have failed.
func raceRotateDisable(t *testing.T, e raceEnv, n int) string {
	m, ctx := e.m, context.Background()
	_, k := raceIssue(t, m, n)
	var (
		rot            *apikey.Rotation
		disabled       *apikey.Key
		rotErr, disErr error
	)
	together(
		func() { rot, rotErr = m.Rotate(ctx, k.ID, time.Hour) },
		func() { disabled, disErr = m.Disable(ctx, k.ID) },
	)
	if rotErr != nil {
		return fmt.Sprintf("Rotate failed: %v", rotErr)
	}
	if disErr != nil {
		if !errors.Is(disErr, apikey.ErrRotated) && !errors.Is(disErr, apikey.ErrConflict) {
			return fmt.Sprintf("a Disable that lost to a rotation: want ErrRotated or ErrConflict, got %v", disErr)
		}
		return ""
	}
	if disabled.RotatedTo != "" {
		return "" // the Disable landed after the rotation: it disabled the predecessor in grace only
	}
	succ, err := m.Get(ctx, rot.Key.ID)
	require.NoError(t, err)
	if !succ.Disabled {
		return "Rotate and Disable both returned nil, and the successor is not disabled: the Disable was lost" + afterRotation(m, k.ID)
	}
	if _, err := m.Verify(ctx, rot.Token); !errors.Is(err, apikey.ErrDisabled) {
		return fmt.Sprintf("the successor of a disabled key: want ErrDisabled, got %v", err)
	}
	return ""
}

// raceRotateNarrow races a rotation against an Update that removes a
// scope, brings the expiry forward and narrows the IP ranges. When both
// succeed, the successor holds neither the removed scope, nor a later
// expiry, nor the wider ranges: it is refused from an address outside the
// narrowed ones. Otherwise the Update must have failed.
func raceRotateNarrow(t *testing.T, e raceEnv, n int) string {
	m, ctx := e.m, context.Background()
	_, k, err := m.Issue(ctx, apikey.IssueParams{
		Owner: fmt.Sprintf("race-%d", n), Scopes: []string{"read", "write"}, TTL: 24 * time.Hour,
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	})
	require.NoError(t, err)
	shorter := k.CreatedAt.Add(30 * time.Minute)
	narrower := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}
	var (
		rot            *apikey.Rotation
		updated        *apikey.Key
		rotErr, updErr error
	)
	together(
		func() { rot, rotErr = m.Rotate(ctx, k.ID, time.Hour) },
		func() {
			updated, updErr = m.Update(ctx, k.ID, func(k *apikey.Key) error {
				k.Scopes, k.ExpiresAt, k.AllowedIPs = []string{"read"}, shorter, narrower
				return nil
			})
		},
	)
	if rotErr != nil {
		return fmt.Sprintf("Rotate failed: %v", rotErr)
	}
	if updErr != nil {
		if !errors.Is(updErr, apikey.ErrRotated) && !errors.Is(updErr, apikey.ErrConflict) {
			return fmt.Sprintf("an Update that lost to a rotation: want ErrRotated or ErrConflict, got %v", updErr)
		}
		return ""
	}
	if updated.RotatedTo != "" {
		return "" // the Update landed after the rotation: it changed the predecessor in grace only
	}
	succ, err := m.Get(ctx, rot.Key.ID)
	require.NoError(t, err)
	switch {
	case succ.HasScope("write"):
		return "Rotate and Update both returned nil, and the successor still has the removed scope" + afterRotation(m, k.ID)
	case succ.ExpiresAt.IsZero() || succ.ExpiresAt.After(shorter):
		return fmt.Sprintf("Rotate and Update both returned nil, and the successor expires at %v, after %v%s",
			succ.ExpiresAt, shorter, afterRotation(m, k.ID))
	case !slices.Equal(succ.AllowedIPs, narrower):
		return fmt.Sprintf("Rotate and Update both returned nil, and the successor has the IP ranges %v, not %v%s",
			succ.AllowedIPs, narrower, afterRotation(m, k.ID))
	}
	if _, err := m.VerifyFrom(ctx, rot.Token, netip.MustParseAddr("10.2.0.1")); !errors.Is(err, apikey.ErrIPNotAllowed) {
		return fmt.Sprintf("the successor of a narrowed key, from outside the narrowed range: want ErrIPNotAllowed, got %v", err)
	}
	return ""
}

// afterRotation describes the old key after a lost change. The change
// either landed on it after the rotation and never reached the successor,
// or the rotation was written over a read from before the change.
func afterRotation(m *apikey.Manager, id string) string {
	old, err := m.Get(context.Background(), id)
	if err != nil {
		return ""
	}
	return fmt.Sprintf(" (the old key: revision %d, disabled %v, scopes %v, rotated to %s)",
		old.Revision, old.Disabled, old.Scopes, old.RotatedTo)
}
