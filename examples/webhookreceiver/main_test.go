package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/outbox"
	"github.com/gokeys/apikey/webhook"
)

func TestReceiver(t *testing.T) {
	secret := webhook.NewSecret()
	v, err := webhook.NewVerifier([]string{secret}, webhook.VerifierOptions{})
	require.NoError(t, err)
	var got []string
	rc := &receiver{v: v, seen: map[string]bool{}, handle: func(p outbox.Payload) { got = append(got, p.Type+" "+p.Data.Key.ID) }}
	body := `{"type":"key.leaked","timestamp":"2026-05-01T12:00:00Z","data":{"key":{"id":"k1"},"url":"https://github.com/a/b"}}`
	post := func(sign string, body string) int {
		now := time.Now()
		sig, err := webhook.Sign("msg_1", now, []byte(body), sign)
		require.NoError(t, err)
		req := httptest.NewRequest(http.MethodPost, "/hooks", strings.NewReader(body))
		req.Header.Set("webhook-id", "msg_1")
		req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
		req.Header.Set("webhook-signature", sig)
		rec := httptest.NewRecorder()
		rc.ServeHTTP(rec, req)
		return rec.Code
	}
	assert.Equal(t, http.StatusUnauthorized, post(webhook.NewSecret(), body), "another secret")
	assert.Equal(t, http.StatusNoContent, post(secret, body))
	assert.Equal(t, http.StatusNoContent, post(secret, body), "a repeat is acknowledged")
	assert.Equal(t, []string{"key.leaked k1"}, got, "and processed once")
}

// TestREADMEQuotesTheReceiver keeps the receiver shown in
// examples/server/README.md the one compiled here.
func TestREADMEQuotesTheReceiver(t *testing.T) {
	src, err := os.ReadFile("main.go")
	require.NoError(t, err)
	readme, err := os.ReadFile("../server/README.md")
	require.NoError(t, err)
	s := string(src)
	start := strings.Index(s, "// receiver verifies")
	require.GreaterOrEqual(t, start, 0)
	assert.Contains(t, string(readme), s[start:], "README.md quotes main.go from the receiver type to the end")
}
