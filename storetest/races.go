package storetest

import (
	"context"
	"errors"
	"fmt"
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

// race is one guarantee checked with concurrent callers.
type race struct {
	name string
	// trial runs one trial on m and returns a description of the
	// violation it saw, or "".
	trial func(t *testing.T, m *apikey.Manager, n int) string
}

func runRaces(t *testing.T, newStore func(t *testing.T) apikey.Store, trials int) {
	races := []race{
		{"RaceUpdateVsRevokeNeverRevives", raceUpdateRevoke},
		{"RaceRotateVsRotateHasOneWinner", raceRotateRotate},
		{"RaceRotateVsRevokeNeverRevives", raceRotateRevoke},
		{"RaceRevokeOwnerVsRotateLeavesNoLiveKey", raceRevokeOwnerRotate},
		{"RaceUpdatesAreNeverLost", raceUpdateUpdate},
	}
	for _, r := range races {
		t.Run(r.name, func(t *testing.T) {
			for _, mode := range []struct {
				name string
				wrap func(apikey.Store) apikey.Store
			}{
				{"Capabilities", func(s apikey.Store) apikey.Store { return s }},
				{"PlainStore", func(s apikey.Store) apikey.Store { return plainStore{s} }},
			} {
				t.Run(mode.name, func(t *testing.T) {
					m, err := apikey.New(mode.wrap(newStore(t)), apikey.Options{
						Prefix: "sk_race", CacheTTL: -1, CacheNegativeTTL: -1, LastUsedInterval: -1,
					})
					require.NoError(t, err)
					t.Cleanup(func() { _ = m.Close(context.Background()) })
					start, violations := time.Now(), 0
					for n := range trials {
						if v := r.trial(t, m, n); v != "" {
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
					t.Logf("%d trials, %d violations, %v", trials, violations, time.Since(start).Round(time.Millisecond))
				})
			}
		})
	}
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
// revocation: the revoked key must never verify again.
func raceUpdateRevoke(t *testing.T, m *apikey.Manager, n int) string {
	ctx := context.Background()
	token, k := raceIssue(t, m, n)
	var revokeErr error
	updErrs := make([]error, 4)
	update := func(i int) func() {
		return func() {
			_, updErrs[i] = m.Update(ctx, k.ID, func(k *apikey.Key) error {
				k.Name = fmt.Sprintf("update %d", i)
				k.Plan = "pro"
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
		if err != nil && !errors.Is(err, apikey.ErrConflict) {
			return fmt.Sprintf("update %d failed: %v", i, err)
		}
	}
	if v := mustBeRevoked(m, "the key", token); v != "" {
		return v
	}
	// Changes after the revocation keep it revoked too.
	if _, err := m.Enable(ctx, k.ID); err != nil {
		return fmt.Sprintf("Enable of a revoked key: %v", err)
	}
	return mustBeRevoked(m, "the re-enabled key", token)
}

// raceRotateRotate races rotations of one key: exactly one may succeed,
// leaving exactly one successor.
func raceRotateRotate(t *testing.T, m *apikey.Manager, n int) string {
	ctx := context.Background()
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

// raceRotateRevoke races a rotation against a revocation of the old key:
// the old key stays revoked, and a rotation that lost leaves no successor.
func raceRotateRevoke(t *testing.T, m *apikey.Manager, n int) string {
	ctx := context.Background()
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
// the owner's keys: afterwards no key of the owner verifies.
func raceRevokeOwnerRotate(t *testing.T, m *apikey.Manager, n int) string {
	ctx := context.Background()
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

// raceUpdateUpdate races updates that each add one metadata entry: none
// may be lost.
func raceUpdateUpdate(t *testing.T, m *apikey.Manager, n int) string {
	ctx := context.Background()
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
