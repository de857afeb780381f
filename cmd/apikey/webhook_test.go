package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// With APIKEY_WEBHOOK_ENDPOINTS the CLI writes each change with its
// events, as the services do; webhook list shows them, webhook redeliver
// makes one pending again, webhook secret prints a secret.
func TestWebhookCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	require.Equal(t, exitOK, h.run("", "migrate").code)
	h.json("issue", "--owner", "quiet")
	r := h.run("", "webhook", "list", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Equal(t, "[]\n", r.stdout, "no events without the services' endpoints")

	h.env["APIKEY_WEBHOOK_ENDPOINTS"] = "default"
	id := h.json("issue", "--owner", "o")["id"].(string)
	require.Equal(t, exitOK, h.run("", "revoke", id).code)
	r = h.run("", "webhook", "list", "--payload", "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	var evs []eventJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &evs))
	require.Len(t, evs, 2)
	types := []string{evs[0].Type, evs[1].Type}
	assert.ElementsMatch(t, []string{"key.created", "key.revoked"}, types)
	for _, e := range evs {
		assert.Equal(t, "pending", e.State)
		assert.Contains(t, e.Payload, id)
	}

	r = h.run("", "webhook", "redeliver", evs[0].ID, "--json")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.JSONEq(t, `[{"id":"`+evs[0].ID+`","endpoints":1}]`, r.stdout)
	r = h.run("", "webhook", "redeliver", "msg_unknown")
	assert.Equal(t, exitNotFound, r.code)
	assert.Equal(t, "apikey webhook redeliver: no event has the id msg_unknown\n", r.stderr)
	r = h.run("", "webhook", "list", "--state", "dead")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "0 events")

	r = h.run("", "webhook", "secret")
	require.Equal(t, exitOK, r.code)
	assert.True(t, strings.HasPrefix(r.stdout, "whsec_"), r.stdout)

	for _, args := range [][]string{{"webhook"}, {"webhook", "fly"}, {"webhook", "redeliver"},
		{"webhook", "list", "--state", "lost"}, {"webhook", "list", "a", "b"}, {"webhook", "secret", "x"}} {
		assert.Equal(t, exitUsage, h.run("", args...).code, "%q", args)
	}
}
