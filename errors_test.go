package apikey_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/gokeys/apikey"
)

func TestStoreErrorIsNotInvalid(t *testing.T) {
	t.Parallel()
	spy := newSpy()
	m := newManager(t, spy, apikey.Options{CacheTTL: -1})
	token, _ := issue(t, m, apikey.IssueParams{})
	boom := errors.New("connection refused")
	spy.failWith(boom)
	_, err := m.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrUnavailable)
	assert.ErrorIs(t, err, boom)
	assert.NotErrorIs(t, err, apikey.ErrInvalid)

	unknown, _ := m.Format().New()
	_, err = m.Verify(context.Background(), unknown)
	assert.ErrorIs(t, err, apikey.ErrUnavailable, "an unknown key during an outage is not reported invalid either")

	spy.hook = func(string) { panic("store bug") }
	spy.failWith(nil)
	_, err = m.Verify(context.Background(), token)
	assert.ErrorIs(t, err, apikey.ErrUnavailable, "a panicking store fails closed")
}
