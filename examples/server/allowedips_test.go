package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/memlimit"
)

// The contract of IP restrictions: "allowed_ips" on POST /api-keys and
// PATCH /api-keys/{id}, shown in the key view, and -trusted-proxies. The
// test client connects from 127.0.0.1.
func TestAllowedIPsAndTrustedProxies(t *testing.T) {
	t.Parallel()
	clock := &testClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	call := func(srv *httptest.Server, token string, xff ...string) int {
		t.Helper()
		req, err := http.NewRequest("GET", srv.URL+"/data", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		for _, v := range xff {
			req.Header.Add("X-Forwarded-For", v)
		}
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	newSrv := func(proxies string) (*httptest.Server, client) {
		limiter, err := memlimit.New(memlimit.Options{Now: clock.Now})
		require.NoError(t, err)
		p, err := parseProxies(proxies, "X-Forwarded-For")
		require.NoError(t, err)
		a, err := newApp(context.Background(), appConfig{manager: newManager(t, newSQLiteStore(t), clock), limiter: limiter,
			users: map[string]string{"demo": "demo"}, proxies: p})
		require.NoError(t, err)
		srv := httptest.NewServer(a.routes())
		t.Cleanup(srv.Close)
		return srv, client{t, srv}
	}

	srv, c := newSrv("")
	r := c.do("POST", "/api-keys", "demo:demo", `{"scopes":["read"],"allowed_ips":["203.0.113.0/24","2001:db8::/32"]}`)
	require.Equal(t, 201, r.status, r.raw)
	assert.Equal(t, []any{"203.0.113.0/24", "2001:db8::/32"}, r.body["allowed_ips"])
	id, token := r.body["id"].(string), r.body["key"].(string)
	assert.Equal(t, http.StatusForbidden, call(srv, token), "from 127.0.0.1")
	assert.Equal(t, http.StatusForbidden, call(srv, token, "203.0.113.9"), "a forged X-Forwarded-For is ignored")
	r = c.do("GET", "/api-keys/"+id, "demo:demo", "")
	assert.Equal(t, []any{"203.0.113.0/24", "2001:db8::/32"}, r.body["allowed_ips"], "the key view")
	r = c.do("PATCH", "/api-keys/"+id, "demo:demo", `{"allowed_ips":["127.0.0.1"]}`)
	require.Equal(t, 200, r.status, r.raw)
	assert.Equal(t, []any{"127.0.0.1/32"}, r.body["allowed_ips"])
	assert.Equal(t, http.StatusOK, call(srv, token))
	r = c.do("PATCH", "/api-keys/"+id, "demo:demo", `{"allowed_ips":["10.0.0.1/8"]}`)
	assert.Equal(t, 400, r.status, r.raw)
	assert.Equal(t, "allowed_ips", r.body["field"])

	// Behind a proxy on loopback: its X-Forwarded-For names the client,
	// read from the right.
	srv, c = newSrv("127.0.0.0/8, ::1/128")
	r = c.do("POST", "/api-keys", "demo:demo", `{"scopes":["read"],"allowed_ips":["203.0.113.0/24"]}`)
	require.Equal(t, 201, r.status, r.raw)
	token = r.body["key"].(string)
	assert.Equal(t, http.StatusOK, call(srv, token, "203.0.113.9"))
	assert.Equal(t, http.StatusOK, call(srv, token, "198.51.100.1, 203.0.113.9"))
	assert.Equal(t, http.StatusForbidden, call(srv, token, "203.0.113.9, 198.51.100.1"), "the client forged the left entry")
	assert.Equal(t, http.StatusForbidden, call(srv, token), "the proxy itself")

	for _, bad := range [][2]string{{"10.0.0.1/8", "X-Forwarded-For"}, {"nonsense", ""}, {"10.0.0.0/8", "X-Real-IP"}} {
		_, err := parseProxies(bad[0], bad[1])
		assert.Error(t, err, "%v", bad)
	}
}
