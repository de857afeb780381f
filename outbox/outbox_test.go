package outbox_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/outbox"
)

func TestPolicyResolved(t *testing.T) {
	p, err := outbox.Policy{}.Resolved()
	require.NoError(t, err)
	assert.Equal(t, []string{outbox.DefaultEndpoint}, p.Endpoints)
	assert.Equal(t, outbox.Types(), p.Types, "every type")
	assert.Equal(t, 7*24*time.Hour, p.ExpiringLead)
	assert.Equal(t, 10_000, p.Queue)
	low, ok := p.LowAt(1000)
	assert.True(t, ok)
	assert.Equal(t, int64(100), low, "a tenth of the grant")

	p, err = outbox.Policy{Types: []string{outbox.KeyLeaked}, CreditsLow: 7}.Resolved()
	require.NoError(t, err)
	assert.True(t, p.Writes(outbox.KeyLeaked))
	assert.False(t, p.Writes(outbox.KeyCreated))
	low, _ = p.LowAt(1000)
	assert.Equal(t, int64(7), low)
	_, ok = (&outbox.Policy{CreditsLow: -1}).LowAt(1000)
	assert.False(t, ok, "negative: never low")

	for _, bad := range []outbox.Policy{
		{Types: []string{"key.exploded"}}, {Endpoints: []string{"a", "a"}}, {Endpoints: []string{""}},
		{Endpoints: []string{strings.Repeat("e", outbox.MaxIDLength+1)}}, {Queue: -1},
	} {
		_, err := bad.Resolved()
		assert.ErrorIs(t, err, outbox.ErrInvalid, "%+v", bad)
	}
}

func TestEventValidate(t *testing.T) {
	ok := outbox.Event{ID: "msg_ABC-def_0", Endpoint: "default", Type: outbox.KeyCreated, Payload: []byte("{}")}
	assert.NoError(t, ok.Validate())
	for name, change := range map[string]func(*outbox.Event){
		"NoID":         func(e *outbox.Event) { e.ID = "" },
		"DotInID":      func(e *outbox.Event) { e.ID = "msg.1" }, // it separates the signed parts
		"SpaceInID":    func(e *outbox.Event) { e.ID = "msg 1" },
		"LongID":       func(e *outbox.Event) { e.ID = strings.Repeat("a", outbox.MaxIDLength+1) },
		"NoEndpoint":   func(e *outbox.Event) { e.Endpoint = "" },
		"NoType":       func(e *outbox.Event) { e.Type = "" },
		"LargePayload": func(e *outbox.Event) { e.Payload = make([]byte, outbox.MaxPayload+1) },
	} {
		e := ok
		change(&e)
		assert.ErrorIs(t, e.Validate(), outbox.ErrInvalid, name)
	}
}

func TestTrunc(t *testing.T) {
	assert.Equal(t, "short", outbox.Trunc("short"))
	long := strings.Repeat("é", outbox.MaxError) // two bytes each
	cut := outbox.Trunc(long)
	assert.LessOrEqual(t, len(cut), outbox.MaxError)
	assert.True(t, utf8.ValidString(cut), "cut on a rune boundary")
}

func TestChangeTravelsInTheContext(t *testing.T) {
	assert.Nil(t, outbox.ChangeFrom(context.Background()))
	c := &outbox.Change{Cancel: []string{"msg_1"}}
	assert.Same(t, c, outbox.ChangeFrom(outbox.WithChange(context.Background(), c)))
}
