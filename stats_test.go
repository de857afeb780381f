package apikey_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/memstore"
)

func TestStatsCountUsesAndFlushes(t *testing.T) {
	m := newManager(t, memstore.New(), apikey.Options{LastUsedInterval: time.Hour})
	assert.Equal(t, apikey.Stats{}, m.Stats(), "a new Manager has counted nothing")
	token, _ := issue(t, m, apikey.IssueParams{Owner: "alice"})
	for range 3 {
		_, err := m.Verify(context.Background(), token)
		require.NoError(t, err)
	}
	_, err := m.Verify(context.Background(), token+"x")
	require.Error(t, err)
	require.NoError(t, m.Close(context.Background()))
	s := m.Stats()
	assert.GreaterOrEqual(t, s.UsesRecorded, uint64(1), "successful verifications are recorded")
	assert.LessOrEqual(t, s.UsesRecorded, uint64(3), "a refused one is not")
	assert.Equal(t, uint64(1), s.Flushes, "Close flushes what is pending")
	assert.Equal(t, uint64(1), s.UsesWritten)
	assert.Zero(t, s.UsesDropped+s.FlushErrors)
}
