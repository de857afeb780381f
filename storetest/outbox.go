package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/outbox"
)

// runOutboxTests runs the outbox.Store contract when the store implements
// it: one subtest per rule, the race of concurrent claims, the changes of
// a Manager's writes, and the deliveries of webhook.Dispatcher through
// crashes, an endpoint down for an hour and two instances at once.
func runOutboxTests(t *testing.T, newStore func(t *testing.T) apikey.Store, opts Options) {
	tests := []struct {
		name string
		fn   func(*testing.T, apikey.Store, outbox.Store)
	}{
		{"OutboxAppendKeepsTheFirstEventOfAnIDAndEndpoint", testOutboxAppendIdempotent},
		{"OutboxAppendRefusesInvalidEvents", testOutboxAppendInvalid},
		{"OutboxRoundTripsPayloadAndTimes", testOutboxRoundTrip},
		{"OutboxClaimTakesDueUnleasedEventsOfOneEndpointEarliestFirst", testOutboxClaim},
		{"OutboxClaimTakesAnEventAgainWhenItsLeaseEnds", testOutboxLeaseEnds},
		{"OutboxSettleIsConditionalOnTheClaim", testOutboxSettleConditional},
		{"OutboxSettleRecordsTheOutcome", testOutboxSettle},
		{"OutboxRedeliverMakesSettledEventsPending", testOutboxRedeliver},
		{"OutboxEventsListsNewestFirst", testOutboxEvents},
		{"OutboxPurgeDeletesSettledEventsOnly", testOutboxPurge},
		{"OutboxChangeRidesWithEachWrite", testOutboxChangeRides},
		{"OutboxChangeIsNotAppliedByAFailedWrite", testOutboxChangeFailedWrite},
		{"OutboxChangeWithAnInvalidEventFailsTheWrite", testOutboxChangeInvalid},
		{"OutboxChangeCancelsOnlyUnclaimedPendingEvents", testOutboxCancel},
		{"OutboxHonoursCancelledContext", testOutboxCancelled},
		{"ManagerWritesAnEventWithEachChange", testManagerEvents},
		{"ManagerEventsNeverCarryATokenOrDigest", testManagerEventsSecretFree},
		{"ManagerLeakedWritesKeyLeakedWithItsAction", testManagerLeakEvents},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			tc.fn(t, s, outboxStore(t, s))
		})
	}
	if opts.Trials > 0 {
		t.Run("RaceConcurrentClaimsNeverShareAnEvent", func(t *testing.T) {
			s := newStore(t)
			os := outboxStore(t, s)
			runTrials(t, Options{Trials: min(opts.Trials, 200), Budget: opts.Budget}, func(n int) string { return raceClaims(t, os, n) })
		})
	}
	runDeliveryTests(t, newStore)
}

func outboxStore(t *testing.T, s apikey.Store) outbox.Store {
	t.Helper()
	require.NotNil(t, s, "newStore returned nil")
	os, ok := s.(outbox.Store)
	if !ok {
		t.Skip("store does not implement outbox.Store")
	}
	return os
}

// t0 is the first instant of the outbox tests.
var t0 = time.Date(2026, 5, 1, 12, 0, 0, 123456789, time.UTC)

// event returns an event of id for endpoint, due at due.
func event(id, endpoint string, due time.Time) outbox.Event {
	return outbox.Event{ID: id, Endpoint: endpoint, Type: outbox.KeyRevoked,
		Payload: []byte(`{"type":"key.revoked","id":"` + id + `"}`), CreatedAt: t0, DueAt: due}
}

// newEventID returns an id no other test uses.
func newEventID() string { return "msg_" + apikey.NewID() }

func mustAppend(t *testing.T, os outbox.Store, evs ...outbox.Event) {
	t.Helper()
	require.NoError(t, os.Append(ctx(t), evs))
}

func mustClaim(t *testing.T, os outbox.Store, endpoint, claim string, now time.Time, limit int) []outbox.Event {
	t.Helper()
	evs, err := os.Claim(ctx(t), endpoint, claim, now, now.Add(time.Minute), limit)
	require.NoError(t, err)
	return evs
}

// eventsOf returns the stored events of id, by endpoint.
func eventsOf(t *testing.T, os outbox.Store, id string) map[string]outbox.Event {
	t.Helper()
	evs, err := os.Events(ctx(t), outbox.Query{ID: id})
	require.NoError(t, err)
	out := map[string]outbox.Event{}
	for _, e := range evs {
		out[e.Endpoint] = e
	}
	return out
}

func claimIDs(evs []outbox.Event) []string {
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	return ids
}

func testOutboxAppendIdempotent(t *testing.T, _ apikey.Store, os outbox.Store) {
	id := newEventID()
	first := event(id, "a", t0)
	mustAppend(t, os, first, event(id, "b", t0))
	again := event(id, "a", t0.Add(time.Hour))
	again.Payload = []byte(`{"second":true}`)
	mustAppend(t, os, again)
	got := eventsOf(t, os, id)
	require.Len(t, got, 2, "one event per endpoint")
	assert.Equal(t, string(first.Payload), string(got["a"].Payload), "the first event of an id and endpoint stays")
	assert.True(t, got["a"].DueAt.Equal(apikey.UTCMicro(t0)), "its due time too")

	// A delivered event is not made pending again by an append.
	evs := mustClaim(t, os, "a", "c1", t0, 10)
	require.Len(t, evs, 1)
	require.NoError(t, os.Settle(ctx(t), outbox.Result{ID: id, Endpoint: "a", Claim: "c1", State: outbox.Delivered, At: t0}))
	mustAppend(t, os, first)
	assert.Equal(t, outbox.Delivered, eventsOf(t, os, id)["a"].State, "appending a delivered event again changes nothing")
}

func testOutboxAppendInvalid(t *testing.T, _ apikey.Store, os outbox.Store) {
	good := event(newEventID(), "a", t0)
	for _, bad := range []outbox.Event{
		event("", "a", t0), event("msg.dot", "a", t0), event(strings.Repeat("x", outbox.MaxIDLength+1), "a", t0),
		event(newEventID(), "", t0), {ID: newEventID(), Endpoint: "a", Payload: []byte("{}")},
		{ID: newEventID(), Endpoint: "a", Type: "t", Payload: make([]byte, outbox.MaxPayload+1)},
	} {
		err := os.Append(ctx(t), []outbox.Event{good, bad})
		assert.ErrorIs(t, err, outbox.ErrInvalid, "event %q/%q", bad.ID, bad.Endpoint)
	}
	assert.Empty(t, eventsOf(t, os, good.ID), "a refused Append appends nothing")
}

func testOutboxRoundTrip(t *testing.T, _ apikey.Store, os outbox.Store) {
	id := newEventID()
	e := event(id, "a", t0.Add(time.Minute))
	e.Payload = []byte("{\"data\":{\"name\":\"caf\u00e9 \\u2603\"},\"raw\":\"\\n\"}")
	e.CreatedAt = t0.In(time.FixedZone("X", 3600))
	mustAppend(t, os, e)
	got := eventsOf(t, os, id)["a"]
	assert.Equal(t, e.Payload, got.Payload, "payload byte for byte")
	assert.Equal(t, e.Type, got.Type)
	assert.Equal(t, time.UTC, got.CreatedAt.Location(), "times in UTC")
	assert.True(t, apikey.UTCMicro(e.CreatedAt).Equal(got.CreatedAt), "CreatedAt to the microsecond: %v", got.CreatedAt)
	assert.True(t, apikey.UTCMicro(e.DueAt).Equal(got.DueAt), "DueAt: %v", got.DueAt)
	assert.Equal(t, outbox.Pending, got.State)
	assert.Zero(t, got.Attempts)
	assert.Empty(t, got.Claim)
	assert.True(t, got.LeaseUntil.IsZero() && got.AttemptedAt.IsZero())

	noDue := event(newEventID(), "a", time.Time{})
	mustAppend(t, os, noDue)
	assert.True(t, eventsOf(t, os, noDue.ID)["a"].DueAt.Equal(apikey.UTCMicro(t0)), "no DueAt: due at CreatedAt")

	got.Payload[0] = 'X'
	assert.Equal(t, byte('{'), eventsOf(t, os, id)["a"].Payload[0], "values returned are copies")
}

func testOutboxClaim(t *testing.T, _ apikey.Store, os outbox.Store) {
	ep := "ep-" + apikey.NewID()
	late, early, mid := newEventID(), newEventID(), newEventID()
	future := newEventID()
	mustAppend(t, os, event(late, ep, t0.Add(3*time.Second)), event(early, ep, t0.Add(time.Second)),
		event(mid, ep, t0.Add(2*time.Second)), event(future, ep, t0.Add(time.Hour)), event(newEventID(), ep+"-other", t0))
	now := t0.Add(5 * time.Second)
	evs := mustClaim(t, os, ep, "c1", now, 2)
	assert.Equal(t, []string{early, mid}, claimIDs(evs), "the earliest due first, up to the limit")
	for _, e := range evs {
		assert.Equal(t, "c1", e.Claim)
		assert.True(t, apikey.UTCMicro(now.Add(time.Minute)).Equal(e.LeaseUntil), "LeaseUntil: %v", e.LeaseUntil)
		assert.Equal(t, 1, e.Attempts, "a claim is an attempt")
	}
	evs = append(evs, mustClaim(t, os, ep, "c2", now, 10)...)
	assert.Equal(t, []string{early, mid, late}, claimIDs(evs), "leased events and events not due are left, other endpoints too")
	assert.Empty(t, mustClaim(t, os, ep, "c3", now, 10), "nothing left")
	for _, e := range evs {
		require.NoError(t, os.Settle(ctx(t), outbox.Result{ID: e.ID, Endpoint: ep, Claim: e.Claim, State: outbox.Delivered, At: now}))
	}
	assert.Empty(t, mustClaim(t, os, ep, "c4", t0.Add(time.Hour), 0), "a limit of 0 claims nothing")
	assert.Equal(t, []string{future}, claimIDs(mustClaim(t, os, ep, "c5", t0.Add(time.Hour), 10)), "due at its DueAt")
}

func testOutboxLeaseEnds(t *testing.T, _ apikey.Store, os outbox.Store) {
	ep, id := "ep-"+apikey.NewID(), newEventID()
	mustAppend(t, os, event(id, ep, t0))
	evs, err := os.Claim(ctx(t), ep, "c1", t0, t0.Add(time.Minute), 1)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	assert.Empty(t, mustClaim(t, os, ep, "c2", t0.Add(59*time.Second), 1), "the lease holds until it ends")
	evs, err = os.Claim(ctx(t), ep, "c2", t0.Add(time.Minute), t0.Add(2*time.Minute), 1)
	require.NoError(t, err)
	require.Len(t, evs, 1, "an ended lease (a crashed instance) frees the event")
	assert.Equal(t, "c2", evs[0].Claim)
	assert.Equal(t, 2, evs[0].Attempts, "the crashed attempt counts")
	err = os.Settle(ctx(t), outbox.Result{ID: id, Endpoint: ep, Claim: "c1", State: outbox.Delivered, At: t0})
	assert.ErrorIs(t, err, outbox.ErrLost, "the first claim lost the event")
}

func testOutboxSettleConditional(t *testing.T, _ apikey.Store, os outbox.Store) {
	ep, id := "ep-"+apikey.NewID(), newEventID()
	mustAppend(t, os, event(id, ep, t0))
	for _, r := range []outbox.Result{
		{ID: id, Endpoint: ep, Claim: "nobody", State: outbox.Delivered, At: t0},
		{ID: id, Endpoint: ep, Claim: "", State: outbox.Delivered, At: t0},
		{ID: newEventID(), Endpoint: ep, Claim: "nobody", State: outbox.Delivered, At: t0},
	} {
		assert.ErrorIs(t, os.Settle(ctx(t), r), outbox.ErrLost, "claim %q of %s", r.Claim, r.ID)
	}
	assert.Equal(t, outbox.Pending, eventsOf(t, os, id)[ep].State, "a lost Settle writes nothing")
	require.Len(t, mustClaim(t, os, ep, "c1", t0, 1), 1)
	r := outbox.Result{ID: id, Endpoint: ep, Claim: "c1", State: outbox.Delivered, At: t0}
	require.NoError(t, os.Settle(ctx(t), r))
	assert.ErrorIs(t, os.Settle(ctx(t), r), outbox.ErrLost, "a claim settles once")
}

func testOutboxSettle(t *testing.T, _ apikey.Store, os outbox.Store) {
	ep := "ep-" + apikey.NewID()
	delivered, retried, dead := newEventID(), newEventID(), newEventID()
	mustAppend(t, os, event(delivered, ep, t0), event(retried, ep, t0), event(dead, ep, t0))
	require.Len(t, mustClaim(t, os, ep, "c1", t0, 3), 3)
	at := t0.Add(2 * time.Second)
	long := strings.Repeat("é", outbox.MaxError) // twice MaxError bytes
	require.NoError(t, os.Settle(ctx(t), outbox.Result{ID: delivered, Endpoint: ep, Claim: "c1", State: outbox.Delivered, At: at}))
	require.NoError(t, os.Settle(ctx(t), outbox.Result{ID: retried, Endpoint: ep, Claim: "c1", State: outbox.Pending, At: at,
		Next: at.Add(5 * time.Second), Error: "503 Service Unavailable"}))
	require.NoError(t, os.Settle(ctx(t), outbox.Result{ID: dead, Endpoint: ep, Claim: "c1", State: outbox.Dead, At: at, Error: long}))

	d := eventsOf(t, os, delivered)[ep]
	assert.Equal(t, outbox.Delivered, d.State)
	assert.True(t, apikey.UTCMicro(at).Equal(d.AttemptedAt), "AttemptedAt: %v", d.AttemptedAt)
	assert.Empty(t, d.Claim, "the claim is cleared")
	assert.True(t, d.LeaseUntil.IsZero(), "the lease is cleared")
	assert.Equal(t, 1, d.Attempts)

	r := eventsOf(t, os, retried)[ep]
	assert.Equal(t, outbox.Pending, r.State)
	assert.Equal(t, "503 Service Unavailable", r.LastError)
	assert.True(t, apikey.UTCMicro(at.Add(5*time.Second)).Equal(r.DueAt), "DueAt is Next: %v", r.DueAt)
	assert.Empty(t, mustClaim(t, os, ep, "c2", at.Add(4*time.Second), 10), "not due before Next")
	assert.Equal(t, []string{retried}, claimIDs(mustClaim(t, os, ep, "c2", at.Add(5*time.Second), 10)), "due at Next, unleased")
	require.NoError(t, os.Settle(ctx(t), outbox.Result{ID: retried, Endpoint: ep, Claim: "c2", State: outbox.Delivered, At: at}))

	x := eventsOf(t, os, dead)[ep]
	assert.Equal(t, outbox.Dead, x.State)
	assert.LessOrEqual(t, len(x.LastError), outbox.MaxError, "LastError is cut")
	assert.True(t, strings.HasPrefix(long, x.LastError), "cut, not changed")
	assert.Empty(t, mustClaim(t, os, ep, "c3", at.Add(time.Hour), 10), "delivered and dead events are never claimed")
}

func testOutboxRedeliver(t *testing.T, _ apikey.Store, os outbox.Store) {
	ep := "ep-" + apikey.NewID()
	id, busy := newEventID(), newEventID()
	mustAppend(t, os, event(id, ep, t0), event(id, ep+"-b", t0), event(busy, ep, t0.Add(time.Second)))
	require.Len(t, mustClaim(t, os, ep, "c1", t0, 1), 1)
	require.NoError(t, os.Settle(ctx(t), outbox.Result{ID: id, Endpoint: ep, Claim: "c1", State: outbox.Dead, At: t0, Error: "gone"}))
	at := t0.Add(time.Hour)
	n, err := os.Redeliver(ctx(t), id, at)
	require.NoError(t, err)
	assert.Equal(t, 2, n, "every endpoint of the id")
	e := eventsOf(t, os, id)[ep]
	assert.Equal(t, outbox.Pending, e.State)
	assert.Zero(t, e.Attempts, "its attempts start again")
	assert.Empty(t, e.LastError)
	assert.True(t, apikey.UTCMicro(at).Equal(e.DueAt), "due at once: %v", e.DueAt)

	require.Len(t, mustClaim(t, os, ep, "c2", t0.Add(2*time.Second), 1), 1, "busy is claimed")
	n, err = os.Redeliver(ctx(t), busy, t0.Add(3*time.Second))
	require.NoError(t, err)
	assert.Zero(t, n, "an event under an attempt is left to it")
	assert.Equal(t, "c2", eventsOf(t, os, busy)[ep].Claim)

	_, err = os.Redeliver(ctx(t), newEventID(), at)
	assert.ErrorIs(t, err, outbox.ErrNotFound)
}

func testOutboxEvents(t *testing.T, _ apikey.Store, os outbox.Store) {
	ep := "ep-" + apikey.NewID()
	var ids []string
	for i := range 5 {
		e := event(newEventID(), ep, t0)
		e.CreatedAt = t0.Add(time.Duration(i) * time.Second)
		mustAppend(t, os, e)
		ids = append(ids, e.ID)
	}
	claimed := mustClaim(t, os, ep, "c1", t0, 1)
	require.Len(t, claimed, 1)
	require.NoError(t, os.Settle(ctx(t), outbox.Result{ID: claimed[0].ID, Endpoint: ep, Claim: "c1", State: outbox.Dead, At: t0}))
	evs, err := os.Events(ctx(t), outbox.Query{Size: 1000})
	require.NoError(t, err)
	var mine []string
	for _, e := range evs {
		if e.Endpoint == ep {
			mine = append(mine, e.ID)
		}
	}
	assert.Equal(t, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, mine, "newest first")
	evs, err = os.Events(ctx(t), outbox.Query{State: outbox.Dead, Size: 1000})
	require.NoError(t, err)
	assert.Contains(t, claimIDs(evs), claimed[0].ID)
	for _, e := range evs {
		assert.Equal(t, outbox.Dead, e.State)
	}
	evs, err = os.Events(ctx(t), outbox.Query{Size: 2})
	require.NoError(t, err)
	assert.Len(t, evs, 2, "at most Limit")
}

func testOutboxPurge(t *testing.T, _ apikey.Store, os outbox.Store) {
	ep := "ep-" + apikey.NewID()
	old, recent, pending, dead := newEventID(), newEventID(), newEventID(), newEventID()
	mustAppend(t, os, event(old, ep, t0), event(recent, ep, t0.Add(time.Second)), event(dead, ep, t0.Add(2*time.Second)))
	require.Len(t, mustClaim(t, os, ep, "c1", t0.Add(2*time.Second), 3), 3)
	for id, at := range map[string]time.Time{old: t0, recent: t0.Add(time.Hour), dead: t0} {
		state := outbox.Delivered
		if id == dead {
			state = outbox.Dead
		}
		require.NoError(t, os.Settle(ctx(t), outbox.Result{ID: id, Endpoint: ep, Claim: "c1", State: state, At: at}))
	}
	mustAppend(t, os, event(pending, ep, t0))
	n, err := os.PurgeEvents(ctx(t), t0.Add(time.Minute), 1)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "at most limit")
	n, err = os.PurgeEvents(ctx(t), t0.Add(time.Minute), 100)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "delivered and dead events attempted before before")
	assert.Empty(t, eventsOf(t, os, old))
	assert.Empty(t, eventsOf(t, os, dead))
	assert.Len(t, eventsOf(t, os, recent), 1, "a recent one stays")
	assert.Len(t, eventsOf(t, os, pending), 1, "a pending one stays")
}

// changeCtx returns a context carrying a Change that appends an event of
// a new id and cancels cancel.
func changeCtx(t *testing.T, cancel ...string) (context.Context, string) {
	id := newEventID()
	return outbox.WithChange(ctx(t), &outbox.Change{Append: []outbox.Event{event(id, "a", t0)}, Cancel: cancel}), id
}

func testOutboxChangeRides(t *testing.T, s apikey.Store, os outbox.Store) {
	appended := func(name, id string) {
		t.Helper()
		assert.Len(t, eventsOf(t, os, id), 1, "%s appends its change's events", name)
	}
	k := NewKey("alice")
	c, id := changeCtx(t)
	require.NoError(t, s.Create(c, k))
	appended("Create", id)

	cancelled := newEventID()
	mustAppend(t, os, event(cancelled, "a", t0), event(cancelled, "b", t0))
	k.Name = "renamed"
	c, id = changeCtx(t, cancelled)
	require.NoError(t, s.Update(c, k))
	appended("Update", id)
	assert.Empty(t, eventsOf(t, os, cancelled), "Update cancels the change's ids, every endpoint")

	if r, ok := s.(apikey.Revoker); ok {
		c, id = changeCtx(t)
		require.NoError(t, r.Revoke(c, k.ID, t0))
		appended("Revoke", id)
	}
	if r, ok := s.(apikey.Rotator); ok {
		old := NewKey("alice")
		mustCreate(t, s, old)
		succ := NewKey("alice")
		succ.RotatedFrom = old.ID
		c, id = changeCtx(t)
		require.NoError(t, r.Rotate(c, old, t0, succ))
		appended("Rotate", id)
	}
	if cs, ok := s.(apikey.CustomerStore); ok {
		cust := &apikey.Customer{ID: "cust-" + apikey.NewID(), CreatedAt: t0, UpdatedAt: t0}
		c, id = changeCtx(t)
		require.NoError(t, cs.PutCustomer(c, cust))
		appended("PutCustomer (create)", id)
		cust.Suspended = true
		c, id = changeCtx(t)
		require.NoError(t, cs.PutCustomer(c, cust))
		appended("PutCustomer (update)", id)
	}
	c, id = changeCtx(t)
	require.NoError(t, s.Delete(c, k.ID))
	appended("Delete", id)

	// Reads and MarkUsed ignore a change.
	other := NewKey("alice")
	mustCreate(t, s, other)
	c, id = changeCtx(t)
	_, err := s.Get(c, other.ID)
	require.NoError(t, err)
	require.NoError(t, s.MarkUsed(c, map[string]time.Time{other.ID: t0}))
	assert.Empty(t, eventsOf(t, os, id), "Get and MarkUsed append nothing")
}

func testOutboxChangeFailedWrite(t *testing.T, s apikey.Store, os outbox.Store) {
	none := func(name, id string) {
		t.Helper()
		assert.Empty(t, eventsOf(t, os, id), "%s failed but appended its events", name)
	}
	k := NewKey("alice")
	mustCreate(t, s, k)
	c, id := changeCtx(t)
	assert.ErrorIs(t, s.Create(c, k), apikey.ErrConflict)
	none("Create of an existing id", id)

	stale := mustGet(t, s, k.ID)
	k.Name = "first"
	require.NoError(t, s.Update(ctx(t), k))
	c, id = changeCtx(t)
	assert.ErrorIs(t, s.Update(c, stale), apikey.ErrConflict)
	none("Update at a stale revision", id)
	c, id = changeCtx(t)
	assert.ErrorIs(t, s.Update(c, NewKey("alice")), apikey.ErrNotFound)
	none("Update of an unknown id", id)
	c, id = changeCtx(t)
	assert.ErrorIs(t, s.Delete(c, apikey.NewID()), apikey.ErrNotFound)
	none("Delete of an unknown id", id)

	if r, ok := s.(apikey.Revoker); ok {
		require.NoError(t, r.Revoke(ctx(t), k.ID, t0))
		c, id = changeCtx(t)
		require.NoError(t, r.Revoke(c, k.ID, t0.Add(time.Hour)))
		none("Revoke of a revoked key (a write that changes nothing)", id)
		c, id = changeCtx(t)
		assert.ErrorIs(t, r.Revoke(c, apikey.NewID(), t0), apikey.ErrNotFound)
		none("Revoke of an unknown id", id)
	}
	if r, ok := s.(apikey.Rotator); ok {
		old := NewKey("alice")
		mustCreate(t, s, old)
		stale := old.Clone()
		stale.Revision = 7
		c, id = changeCtx(t)
		assert.ErrorIs(t, r.Rotate(c, stale, t0, NewKey("alice")), apikey.ErrConflict)
		none("Rotate at a stale revision", id)
	}
	if cs, ok := s.(apikey.CustomerStore); ok {
		cust := &apikey.Customer{ID: "cust-" + apikey.NewID(), CreatedAt: t0, UpdatedAt: t0}
		require.NoError(t, cs.PutCustomer(ctx(t), cust))
		stale := cust.Clone()
		stale.Revision = 7
		c, id = changeCtx(t)
		assert.ErrorIs(t, cs.PutCustomer(c, stale), apikey.ErrConflict)
		none("PutCustomer at a stale revision", id)
	}
}

func testOutboxChangeInvalid(t *testing.T, s apikey.Store, os outbox.Store) {
	k := NewKey("alice")
	good := event(newEventID(), "a", t0)
	c := outbox.WithChange(ctx(t), &outbox.Change{Append: []outbox.Event{good, event("bad.id", "a", t0)}})
	err := s.Create(c, k)
	require.Error(t, err)
	assert.ErrorIs(t, err, outbox.ErrInvalid)
	_, err = s.Get(ctx(t), k.ID)
	assert.ErrorIs(t, err, apikey.ErrNotFound, "the write is not made without its events")
	assert.Empty(t, eventsOf(t, os, good.ID))
}

func testOutboxCancel(t *testing.T, s apikey.Store, os outbox.Store) {
	ep := "ep-" + apikey.NewID()
	free, claimed, settled := newEventID(), newEventID(), newEventID()
	mustAppend(t, os, event(claimed, ep, t0), event(settled, ep, t0.Add(time.Second)), event(free, ep, t0.Add(time.Hour)))
	require.Len(t, mustClaim(t, os, ep, "c1", t0.Add(time.Second), 2), 2)
	require.NoError(t, os.Settle(ctx(t), outbox.Result{ID: settled, Endpoint: ep, Claim: "c1", State: outbox.Delivered, At: t0}))
	// A cancelled id appended by the same change is written anew: the
	// replacement of a scheduled event.
	replacement := event(free, ep, t0.Add(2*time.Hour))
	c := outbox.WithChange(ctx(t), &outbox.Change{Append: []outbox.Event{replacement}, Cancel: []string{free, claimed, settled}})
	require.NoError(t, s.Create(c, NewKey("alice")))
	got := eventsOf(t, os, free)[ep]
	assert.True(t, apikey.UTCMicro(t0.Add(2*time.Hour)).Equal(got.DueAt), "cancelled, then appended anew: %v", got.DueAt)
	assert.Equal(t, "c1", eventsOf(t, os, claimed)[ep].Claim, "an event under an attempt is not cancelled")
	assert.Equal(t, outbox.Delivered, eventsOf(t, os, settled)[ep].State, "a delivered event is not cancelled")
}

func testOutboxCancelled(t *testing.T, _ apikey.Store, os outbox.Store) {
	c, cancel := context.WithCancel(context.Background())
	cancel()
	e := event(newEventID(), "a", t0)
	assert.ErrorIs(t, os.Append(c, []outbox.Event{e}), context.Canceled)
	_, err := os.Claim(c, "a", "c", t0, t0.Add(time.Minute), 1)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, os.Settle(c, outbox.Result{ID: e.ID, Endpoint: "a", Claim: "c"}), context.Canceled)
	_, err = os.Redeliver(c, e.ID, t0)
	assert.ErrorIs(t, err, context.Canceled)
	_, err = os.Events(c, outbox.Query{})
	assert.ErrorIs(t, err, context.Canceled)
	_, err = os.PurgeEvents(c, t0, 1)
	assert.ErrorIs(t, err, context.Canceled)
}

// raceClaims has claimers claim the same endpoint at once: every event
// goes to one claim.
func raceClaims(t *testing.T, os outbox.Store, n int) string {
	const claimers, events = 6, 12
	ep := fmt.Sprintf("race-%d-%s", n, apikey.NewID())
	evs := make([]outbox.Event, events)
	for i := range evs {
		evs[i] = event(newEventID(), ep, t0)
	}
	mustAppend(t, os, evs...)
	var mu sync.Mutex
	owner := map[string]string{}
	var dup []string
	var failed error
	fns := make([]func(), claimers)
	for c := range fns {
		claim := fmt.Sprintf("c%d", c)
		fns[c] = func() {
			got, err := os.Claim(context.Background(), ep, claim, t0, t0.Add(time.Minute), 3)
			mu.Lock()
			defer mu.Unlock()
			failed = errors.Join(failed, err)
			for _, e := range got {
				if o, ok := owner[e.ID]; ok {
					dup = append(dup, fmt.Sprintf("%s by %s and %s", e.ID, o, claim))
				}
				owner[e.ID] = claim
			}
		}
	}
	together(fns...)
	switch {
	case failed != nil:
		return "claim failed: " + failed.Error()
	case len(dup) > 0:
		return "events claimed twice: " + strings.Join(dup, "; ")
	}
	return ""
}
