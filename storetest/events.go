package storetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/outbox"
)

// clock is a settable clock for a Manager and its dispatchers.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

// Now returns the clock's time.
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// eventManager returns a Manager over s that writes events for p, on the
// clock now.
func eventManager(t *testing.T, s apikey.Store, now func() time.Time, p outbox.Policy) *apikey.Manager {
	t.Helper()
	opts := raceOptions
	opts.Now, opts.Outbox, opts.UsageInterval = now, &p, -1
	m, err := apikey.New(s, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

// allEvents returns every event of the outbox by id then endpoint.
func allEvents(t *testing.T, os outbox.Store) map[string]map[string]outbox.Event {
	t.Helper()
	evs, err := os.Events(ctx(t), outbox.Query{Size: 1000})
	require.NoError(t, err)
	out := map[string]map[string]outbox.Event{}
	for _, e := range evs {
		if out[e.ID] == nil {
			out[e.ID] = map[string]outbox.Event{}
		}
		out[e.ID][e.Endpoint] = e
	}
	return out
}

// decoded is an event with its payload decoded.
type decoded struct {
	outbox.Event
	P outbox.Payload
}

// eventsOfType returns the events of type typ for endpoint, decoded.
func eventsOfType(t *testing.T, os outbox.Store, endpoint, typ string) []decoded {
	t.Helper()
	var out []decoded
	for _, byEP := range allEvents(t, os) {
		e, ok := byEP[endpoint]
		if !ok || e.Type != typ {
			continue
		}
		d := decoded{Event: e}
		require.NoError(t, json.Unmarshal(e.Payload, &d.P), "payload of %s", e.ID)
		assert.Equal(t, typ, d.P.Type, "the payload's type")
		out = append(out, d)
	}
	return out
}

// keyIDs returns the ids of the keys of events.
func keyIDs(evs []decoded) []string {
	var ids []string
	for _, e := range evs {
		if e.P.Data.Key != nil {
			ids = append(ids, e.P.Data.Key.ID)
		}
	}
	return ids
}

func testManagerEvents(t *testing.T, s apikey.Store, os outbox.Store) {
	c := ctx(t)
	clk := newClock(t0)
	lead := 24 * time.Hour
	m := eventManager(t, s, clk.Now, outbox.Policy{Endpoints: []string{"a", "b"}, ExpiringLead: lead})
	owner := "alice-" + apikey.NewID()[:6]
	_, k, err := m.Issue(c, apikey.IssueParams{Owner: owner, TTL: 72 * time.Hour})
	require.NoError(t, err)

	created := eventsOfType(t, os, "a", outbox.KeyCreated)
	require.Len(t, created, 1, "Issue writes key.created")
	assert.Equal(t, k.ID, created[0].P.Data.Key.ID)
	assert.Equal(t, owner, created[0].P.Data.Key.Owner)
	assert.Len(t, allEvents(t, os)[created[0].ID], 2, "once per endpoint, with one id")
	exp := eventsOfType(t, os, "a", outbox.KeyExpiring)
	require.Len(t, exp, 1, "an expiring key gets key.expiring")
	assert.True(t, k.ExpiresAt.Add(-lead).Equal(exp[0].DueAt), "due the lead before the expiry: %v", exp[0].DueAt)

	_, err = m.Disable(c, k.ID)
	require.NoError(t, err)
	_, err = m.Disable(c, k.ID)
	require.NoError(t, err)
	assert.Len(t, eventsOfType(t, os, "a", outbox.KeyDisabled), 1, "key.disabled once per change of state")
	_, err = m.Enable(c, k.ID)
	require.NoError(t, err)
	assert.Len(t, eventsOfType(t, os, "a", outbox.KeyEnabled), 1, "key.enabled")

	later := k.ExpiresAt.Add(24 * time.Hour)
	_, err = m.Update(c, k.ID, func(k *apikey.Key) error { k.ExpiresAt = later; return nil })
	require.NoError(t, err)
	exp = eventsOfType(t, os, "a", outbox.KeyExpiring)
	require.Len(t, exp, 1, "a moved expiry replaces key.expiring")
	assert.True(t, later.Add(-lead).Equal(exp[0].DueAt), "due before the new expiry: %v", exp[0].DueAt)

	clk.Advance(time.Minute)
	rot, err := m.Rotate(c, k.ID, time.Hour)
	require.NoError(t, err)
	rotated := eventsOfType(t, os, "a", outbox.KeyRotated)
	require.Len(t, rotated, 1, "Rotate writes key.rotated")
	assert.Equal(t, k.ID, rotated[0].P.Data.Key.ID)
	require.NotNil(t, rotated[0].P.Data.Successor)
	assert.Equal(t, rot.Key.ID, rotated[0].P.Data.Successor.ID)
	assert.True(t, rot.Previous.ExpiresAt.Equal(rotated[0].P.Data.Key.ExpiresAt), "the old key's end of grace")
	assert.Equal(t, []string{rot.Key.ID}, keyIDs(eventsOfType(t, os, "a", outbox.KeyExpiring)),
		"the old key's key.expiring is cancelled, the successor's scheduled")

	require.NoError(t, m.Revoke(c, rot.Key.ID))
	require.NoError(t, m.Revoke(c, rot.Key.ID))
	assert.Equal(t, []string{rot.Key.ID}, keyIDs(eventsOfType(t, os, "a", outbox.KeyRevoked)), "key.revoked once")
	assert.Empty(t, eventsOfType(t, os, "a", outbox.KeyExpiring), "a revoked key's key.expiring is cancelled")

	_, k2, err := m.Issue(c, apikey.IssueParams{Owner: owner})
	require.NoError(t, err)
	_, k3, err := m.Issue(c, apikey.IssueParams{Owner: owner})
	require.NoError(t, err)
	ids, err := m.RevokeOwner(c, owner)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{k.ID, k2.ID, k3.ID}, ids)
	assert.ElementsMatch(t, []string{rot.Key.ID, k.ID, k2.ID, k3.ID}, keyIDs(eventsOfType(t, os, "b", outbox.KeyRevoked)),
		"RevokeOwner writes key.revoked per key")

	_, k4, err := m.Issue(c, apikey.IssueParams{Owner: owner + "-x", TTL: 72 * time.Hour})
	require.NoError(t, err)
	require.NoError(t, m.Delete(c, k4.ID))
	assert.Empty(t, eventsOfType(t, os, "a", outbox.KeyExpiring), "a deleted key's key.expiring is cancelled")

	if _, ok := s.(apikey.CustomerStore); ok {
		suspend := func(c *apikey.Customer) error { c.Suspended = true; return nil }
		_, err = m.SetCustomer(ctx(t), owner, suspend)
		require.NoError(t, err)
		_, err = m.SetCustomer(ctx(t), owner, suspend)
		require.NoError(t, err)
		sus := eventsOfType(t, os, "a", outbox.CustomerSuspended)
		require.Len(t, sus, 1, "customer.suspended once per suspension")
		assert.Equal(t, owner, sus[0].P.Data.Customer)
	}
	for _, byEP := range allEvents(t, os) {
		for _, e := range byEP {
			assert.Equal(t, outbox.Pending, e.State)
			assert.LessOrEqual(t, len(e.ID), outbox.MaxIDLength)
		}
	}
}

func testManagerEventsSecretFree(t *testing.T, s apikey.Store, os outbox.Store) {
	c := ctx(t)
	m := eventManager(t, s, func() time.Time { return t0 }, outbox.Policy{})
	token, k, err := m.Issue(c, apikey.IssueParams{Owner: "carol", TTL: time.Hour})
	require.NoError(t, err)
	rot, err := m.Rotate(c, k.ID, time.Minute)
	require.NoError(t, err)
	require.NoError(t, m.Revoke(c, rot.Key.ID))
	secrets := [][]byte{[]byte(token), []byte(rot.Token), []byte(token[len(token)-20:])}
	for _, id := range []string{k.ID, rot.Key.ID} {
		h := mustGet(t, s, id).Hash
		secrets = append(secrets, h, []byte(hex.EncodeToString(h)), []byte(base64.StdEncoding.EncodeToString(h)))
	}
	n := 0
	for _, byEP := range allEvents(t, os) {
		for _, e := range byEP {
			n++
			for _, sec := range secrets {
				assert.False(t, bytes.Contains(e.Payload, sec), "event %s (%s) holds a token or digest", e.ID, e.Type)
			}
		}
	}
	assert.GreaterOrEqual(t, n, 3, "created, rotated, revoked")
}

func testManagerLeakEvents(t *testing.T, s apikey.Store, os outbox.Store) {
	c := ctx(t)
	m := eventManager(t, s, func() time.Time { return t0 }, outbox.Policy{})
	token, k, err := m.Issue(c, apikey.IssueParams{Owner: "dave"})
	require.NoError(t, err)
	url := "https://github.com/acme/app/blob/main/.env"
	for range 2 { // the same alert twice
		_, err = m.Leaked(c, token, url, "")
		require.NoError(t, err)
	}
	leaked := eventsOfType(t, os, outbox.DefaultEndpoint, outbox.KeyLeaked)
	require.Len(t, leaked, 1, "key.leaked once per key and url")
	assert.Equal(t, k.ID, leaked[0].P.Data.Key.ID)
	assert.Equal(t, url, leaked[0].P.Data.URL)
	assert.Equal(t, "revoke", leaked[0].P.Data.Action)
	assert.Equal(t, []string{k.ID}, keyIDs(eventsOfType(t, os, outbox.DefaultEndpoint, outbox.KeyRevoked)),
		"the revocation has its event too")

	_, err = m.Leaked(c, token, "https://gist.github.com/x/"+token, "report")
	require.NoError(t, err)
	leaked = eventsOfType(t, os, outbox.DefaultEndpoint, outbox.KeyLeaked)
	require.Len(t, leaked, 2, "another url is another report")
	for _, e := range leaked {
		assert.NotContains(t, e.P.Data.URL, token, "the token in a url is redacted")
	}

	token2, k2, err := m.Issue(c, apikey.IssueParams{Owner: "dave"})
	require.NoError(t, err)
	_, err = m.Leaked(c, token2, url, "disable")
	require.NoError(t, err)
	assert.Equal(t, []string{k2.ID}, keyIDs(eventsOfType(t, os, outbox.DefaultEndpoint, outbox.KeyDisabled)))
	assert.Contains(t, keyIDs(eventsOfType(t, os, outbox.DefaultEndpoint, outbox.KeyLeaked)), k2.ID)
}
