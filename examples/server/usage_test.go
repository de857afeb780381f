package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/sqlstore"
	"github.com/gokeys/apikey/usage"
)

// counts are allowed, limited, refused and cost.
type counts [4]int64

func (c *counts) add(o counts) {
	for i := range c {
		c[i] += o[i]
	}
}

// The server as main runs it, on its SQLite default with a short
// -usage-interval: real traffic (allowed, over demo's free quota of 100 a
// day, without the scope, with a wrong secret) shows in GET /usage and
// GET /api-keys/{id}/usage within a few intervals, exactly as the
// clients saw it; after shutdown the database holds the same.
func TestServerRecordsUsage(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	db := filepath.Join(t.TempDir(), "apikeys.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, flags{addr: addr, db: db, users: "demo:demo,bob:bob", usageInterval: 100 * time.Millisecond},
			slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	base := "http://" + addr
	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, path, auth, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		require.NoError(t, err)
		if user, pw, ok := strings.Cut(auth, ":"); ok {
			req.SetBasicAuth(user, pw)
		} else if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		res, err := client.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		raw, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, raw
	}
	require.Eventually(t, func() bool {
		res, err := client.Get(base + "/healthz")
		if err == nil {
			res.Body.Close()
		}
		return err == nil && res.StatusCode == 200
	}, 10*time.Second, 20*time.Millisecond, "the server starts")

	issue := func(scopes string) (string, string) {
		status, raw := do("POST", "/api-keys", "demo:demo", `{"scopes":`+scopes+`}`)
		require.Equal(t, 201, status, string(raw))
		var k struct{ ID, Key string }
		require.NoError(t, json.Unmarshal(raw, &k))
		return k.ID, k.Key
	}
	rw, rwToken := issue(`["read","write"]`)
	ro, roToken := issue(`["read"]`)
	seen := map[string]*counts{rw: {}, ro: {}}
	send := func(id, method, path, token string) {
		status, raw := do(method, path, token, "")
		switch status {
		case 200, 201:
			c := counts{1, 0, 0, 0}
			if path == "/data" {
				c[3] = 1 // the plan's quota spends one a request
			}
			seen[id].add(c)
		case 429:
			seen[id].add(counts{0, 1, 0, 0})
		case 403:
			seen[id].add(counts{0, 0, 1, 0})
		case 401: // a wrong secret: not counted
		default:
			t.Errorf("%s %s: %d %s", method, path, status, raw)
		}
	}
	for i := range 60 {
		send(rw, "GET", "/data", rwToken)
		send(ro, "GET", "/data", roToken)
		if i%10 == 0 {
			send(rw, "POST", "/data", rwToken)
			send(ro, "POST", "/data", roToken) // 403: no write scope
			send(ro, "GET", "/protected", roToken)
			send(ro, "GET", "/data", roToken[:len(roToken)-2]+"xx")
		}
	}
	var demo counts
	for _, c := range seen {
		demo.add(*c)
	}
	require.Equal(t, counts{106, 26, 6, 100}, demo,
		"the free plan's 100 a day of 126 spending requests, 6 to /protected that spend nothing, 6 writes without the scope")

	usageOf := func(path string, user ...string) counts {
		auth := "demo:demo"
		if len(user) > 0 {
			auth = user[0]
		}
		status, raw := do("GET", path+"?step=hour", auth, "")
		require.Equal(t, 200, status, string(raw))
		var body struct {
			Series []struct{ Allowed, Limited, Refused, Cost int64 }
		}
		require.NoError(t, json.Unmarshal(raw, &body))
		var c counts
		for _, b := range body.Series {
			c.add(counts{b.Allowed, b.Limited, b.Refused, b.Cost})
		}
		return c
	}
	require.Eventually(t, func() bool { return usageOf("/usage") == demo }, 10*time.Second, 50*time.Millisecond, "GET /usage shows the traffic")
	time.Sleep(300 * time.Millisecond) // three more flushes: nothing counted twice
	assert.Equal(t, demo, usageOf("/usage"))
	for id, c := range seen {
		assert.Equal(t, *c, usageOf("/api-keys/"+id+"/usage"), id)
	}
	status, _ := do("GET", "/api-keys/"+ro+"/usage", "bob:bob", "")
	assert.Equal(t, 404, status, "another user's key")
	assert.Equal(t, counts{}, usageOf("/usage", "bob:bob"), "bob's keys made no request")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("the server did not stop")
	}
	// What the database holds after shutdown.
	sdb, err := sql.Open("sqlite", "file:"+db+"?_pragma=busy_timeout(5000)")
	require.NoError(t, err)
	defer sdb.Close()
	store, err := sqlstore.New(sdb, sqlstore.SQLite, sqlstore.Options{})
	require.NoError(t, err)
	m, err := apikey.New(store, apikey.Options{UsageInterval: -1})
	require.NoError(t, err)
	defer m.Close(context.Background())
	now := time.Now()
	series, err := m.Usage(context.Background(), usage.Query{Customer: "demo", From: now.Add(-2 * time.Hour), To: now.Add(time.Hour), Step: usage.Day})
	require.NoError(t, err)
	var stored counts
	for _, r := range series {
		stored.add(counts{r.Allowed, r.Limited, r.Refused, r.Cost})
	}
	assert.Equal(t, demo, stored)
}
