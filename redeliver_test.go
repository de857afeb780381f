package apikey_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
	"github.com/gokeys/apikey/outbox"
)

func TestRedeliver(t *testing.T) {
	t.Parallel()
	store := memstore.New()
	m := newManager(t, store, apikey.Options{Outbox: &outbox.Policy{Endpoints: []string{"a", "b"}}})
	_, k := issue(t, m, apikey.IssueParams{Owner: "ann"})
	evs, err := store.Events(context.Background(), outbox.Query{})
	require.NoError(t, err)
	require.Len(t, evs, 2, "key.created for a and b")
	n, err := m.Redeliver(context.Background(), evs[0].ID)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	_, err = m.Redeliver(context.Background(), "msg_unknown")
	assert.ErrorIs(t, err, apikey.ErrNotFound)
	_, err = newManager(t, newSpy(), apikey.Options{}).Redeliver(context.Background(), evs[0].ID)
	assert.ErrorIs(t, err, errors.ErrUnsupported)
	_ = k
}
