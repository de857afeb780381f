package apikey_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

// leakLog is a slog.Handler that keeps the attributes of every "leak"
// event a Manager logs.
type leakLog struct {
	mu     sync.Mutex
	events []map[string]string
}

func (l *leakLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *leakLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *leakLog) WithGroup(string) slog.Handler            { return l }

func (l *leakLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "apikey" {
			return true
		}
		e := map[string]string{}
		for _, f := range a.Value.Resolve().Group() {
			e[f.Key] = f.Value.String()
		}
		l.mu.Lock()
		l.events = append(l.events, e)
		l.mu.Unlock()
		return false
	})
	return nil
}

// of returns the events of type typ.
func (l *leakLog) of(typ string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, e := range l.events {
		if e["event"] == typ {
			out = append(out, e)
		}
	}
	return out
}

func TestIdentifyFindsAKeyWhateverItsState(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock()
	m := newManager(t, memstore.New(), apikey.Options{Now: clk.Now, CacheTTL: time.Hour})

	states := map[string]func(id string){
		"usable":   func(string) {},
		"revoked":  func(id string) { require.NoError(t, m.Revoke(ctx, id)) },
		"disabled": func(id string) { _, err := m.Disable(ctx, id); require.NoError(t, err) },
		"paused":   func(id string) { _, err := m.Pause(ctx, id); require.NoError(t, err) },
		"expired":  func(string) {},
		"rotated":  func(id string) { _, err := m.Rotate(ctx, id, 0); require.NoError(t, err) },
	}
	for name, set := range states {
		p := apikey.IssueParams{Owner: "ann", Name: name}
		if name == "expired" {
			p.TTL = time.Minute
		}
		token, k := issue(t, m, p)
		set(k.ID)
		if name == "expired" {
			clk.Add(time.Hour)
		}
		got, err := m.Identify(ctx, token)
		require.NoError(t, err, name)
		assert.Equal(t, k.ID, got.ID, name)
		assert.Equal(t, name, got.Name)
	}
}

func TestIdentifyRefusesWhatIsNoKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{Prefix: "sk_live", Prefixes: []string{"sk_test"}})
	token, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
	f := m.Format()

	calls := spy.calls.Load()
	last := "x" // a last character other than the token's: its checksum fails
	if strings.HasSuffix(token, last) {
		last = "y"
	}
	for _, bad := range []string{"", "sk_live_nope", token[:len(token)-1] + last, strings.Repeat("a", apikey.MaxTokenLength+1)} {
		_, err := m.Identify(ctx, bad)
		assert.ErrorIs(t, err, apikey.ErrMalformed)
	}
	assert.Equal(t, calls, spy.calls.Load(), "a malformed token costs no store access")

	tok, err := f.Parse(token)
	require.NoError(t, err)
	testFormat, err := apikey.NewFormat("sk_test", 0)
	require.NoError(t, err)
	unknown, err := f.Compose(apikey.NewID(), tok.Secret)
	require.NoError(t, err)
	wrong, err := f.Compose(k.ID, strings.Repeat("A", len(tok.Secret)))
	require.NoError(t, err)
	other, err := testFormat.Compose(k.ID, tok.Secret) // the live key's material under the test prefix
	require.NoError(t, err)
	for name, bad := range map[string]string{"unknown id": unknown, "wrong secret": wrong, "other prefix": other} {
		calls := spy.calls.Load()
		_, err := m.Identify(ctx, bad)
		assert.ErrorIs(t, err, apikey.ErrInvalid, name)
		assert.Equal(t, calls+1, spy.calls.Load(), "%s: one store read", name)
	}

	spy.failWith(errors.New("down"))
	_, err = m.Identify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrUnavailable, "a failing store is never a verdict on the token")
	assert.NotErrorIs(t, err, apikey.ErrInvalid)
}

func TestLeakedRevokesOnceAndRecordsEveryReport(t *testing.T) {
	t.Parallel()
	for name, store := range map[string]func() apikey.Store{
		"Revoker":     func() apikey.Store { return memstore.New() },
		"conditional": func() apikey.Store { return newSpy() }, // hides the Revoker
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			log := &leakLog{}
			m := newManager(t, store(), apikey.Options{Logger: slog.New(log)})
			token, k := issue(t, m, apikey.IssueParams{Owner: "ann"})

			found, err := m.Leaked(ctx, token, "https://github.com/o/r/blob/1/a.env", "")
			require.NoError(t, err)
			assert.True(t, found.RevokedAt.IsZero(), "the key as it was found")
			first, err := m.Get(ctx, k.ID)
			require.NoError(t, err)
			require.False(t, first.RevokedAt.IsZero())
			_, err = m.Verify(ctx, token)
			assert.ErrorIs(t, err, apikey.ErrRevoked)

			again, err := m.Leaked(ctx, token, "https://github.com/o/r/blob/2/b.env", "revoke")
			require.NoError(t, err)
			assert.Equal(t, first.RevokedAt, again.RevokedAt)
			after, err := m.Get(ctx, k.ID)
			require.NoError(t, err)
			assert.Equal(t, first.Revision, after.Revision, "a repeated report writes nothing")

			leaks := log.of("leak")
			require.Len(t, leaks, 2)
			assert.Equal(t, map[string]string{"event": "leak", "key_id": k.ID, "owner": "ann",
				"url": "https://github.com/o/r/blob/1/a.env", "action": "revoke", "changed": "true"}, leaks[0])
			assert.Equal(t, "false", leaks[1]["changed"])
			assert.Equal(t, "https://github.com/o/r/blob/2/b.env", leaks[1]["url"])
			assert.Len(t, log.of("revoke"), 1)
		})
	}
}

func TestLeakedDisablesOrOnlyReports(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := &leakLog{}
	m := newManager(t, memstore.New(), apikey.Options{Logger: slog.New(log)})

	token, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
	_, err := m.Leaked(ctx, token, "", "report")
	require.NoError(t, err)
	_, err = m.Verify(ctx, token)
	require.NoError(t, err, "report changes nothing")

	_, err = m.Leaked(ctx, token, "", "disable")
	require.NoError(t, err)
	_, err = m.Verify(ctx, token)
	assert.ErrorIs(t, err, apikey.ErrDisabled)
	got, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.True(t, got.RevokedAt.IsZero(), "disable is reversible")

	_, err = m.Leaked(ctx, token, "", "disable")
	require.NoError(t, err)
	again, err := m.Get(ctx, k.ID)
	require.NoError(t, err)
	assert.Equal(t, got.Revision, again.Revision)

	var changed []string
	for _, e := range log.of("leak") {
		changed = append(changed, e["action"]+"="+e["changed"])
	}
	assert.Equal(t, []string{"report=false", "disable=true", "disable=false"}, changed)

	_, err = m.Leaked(ctx, token, "", "delete")
	assert.ErrorIs(t, err, apikey.ErrInvalidOptions)
}

func TestLeakedNeverLogsAToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := &leakLog{}
	m := newManager(t, memstore.New(), apikey.Options{Prefix: "sk_live", Logger: slog.New(log)})
	token, _ := issue(t, m, apikey.IssueParams{})
	other, _ := issue(t, m, apikey.IssueParams{})

	_, err := m.Leaked(ctx, token, "https://example.com/?k="+other+"&x="+strings.Repeat("é", 3000), "")
	require.NoError(t, err)
	leaks := log.of("leak")
	require.Len(t, leaks, 1)
	u := leaks[0]["url"]
	assert.NotContains(t, u, other)
	assert.NotContains(t, u, token)
	assert.Contains(t, u, "sk_live_...")
	assert.LessOrEqual(t, len(u), 2048)
	assert.True(t, strings.HasSuffix(u, "é"), "cut on a rune boundary")

	_, err = m.Leaked(ctx, "sk_live_garbage", "https://example.com", "")
	assert.ErrorIs(t, err, apikey.ErrMalformed)
	assert.Len(t, log.of("leak"), 1, "what is no key is not recorded")
}

// Concurrent reports of one token all succeed and revoke the key once:
// its revision moves once, its revocation time is the first one.
func TestLeakedConcurrentReportsRevokeOnce(t *testing.T) {
	t.Parallel()
	for name, store := range map[string]func() apikey.Store{
		"Revoker":     func() apikey.Store { return memstore.New() },
		"conditional": func() apikey.Store { return newSpy() },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			m := newManager(t, store(), apikey.Options{})
			for trial := 0; trial < 20; trial++ {
				token, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
				var wg sync.WaitGroup
				errs := make(chan error, 16)
				for range 16 {
					wg.Go(func() {
						_, err := m.Leaked(ctx, token, "https://example.com", "")
						errs <- err
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					require.NoError(t, err)
				}
				got, err := m.Get(ctx, k.ID)
				require.NoError(t, err)
				assert.False(t, got.RevokedAt.IsZero())
				assert.Equal(t, k.Revision+1, got.Revision, "revoked by exactly one write")
			}
		})
	}
}

// A hostile report whose URL is cut inside another key's token must not
// put the front of that token (its id and most of its secret) in the
// audit log: the URL is redacted before it is cut.
func TestLeakedNeverLogsATokenCutByTheURLLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := &leakLog{}
	m := newManager(t, memstore.New(), apikey.Options{Prefix: "sk_live", Logger: slog.New(log)})
	token, _ := issue(t, m, apikey.IssueParams{})
	other, _ := issue(t, m, apikey.IssueParams{})
	front := other[:len(other)-8] // prefix, id and all but the end of the secret

	head := "https://example.com/?x="
	url := head + strings.Repeat("a", 2048-len(head)-len(front)-1) + "&" + other
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			_, err := m.Leaked(ctx, token, url, "report")
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	leaks := log.of("leak")
	require.Len(t, leaks, 4)
	for _, l := range leaks {
		assert.NotContains(t, l["url"], front[len("sk_live_"):])
		assert.LessOrEqual(t, len(l["url"]), 2048)
	}
}
