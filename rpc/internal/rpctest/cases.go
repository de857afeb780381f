package rpctest

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/rpc/internal/rpcauth"
)

// Case is one call and the outcome it must have on every protocol.
type Case struct {
	Name string
	// Env is the variant of the server's configuration.
	Env string
	// Key is the key issued for the case (of a customer of its own).
	Key Key
	// MD builds the request metadata from the token. It is bearer when nil.
	MD func(token string) map[string][]string
	// Method is called. It is a stream when it is one of the streaming
	// methods, with N messages (or N replies asked of Watch).
	Method string
	N      int
	// Request is the unary request, an empty Struct when nil.
	Request map[string]any
	// Before are unary calls made first with the same metadata (to spend).
	Before []string

	// Want is the code, where 0 is OK.
	Want rpcauth.Code
	// Replies is the number of replies (1 for an OK unary call).
	Replies int
	// SeesKey reports whether the handler saw the case's key.
	SeesKey bool
	// Check, if set, checks the outcome further.
	Check func(t *testing.T, key *apikey.Key, o Outcome)
	// Remaining, if not 0, is the daily quota that a unary call to Echo
	// made after the case reports as left (the call spending one more).
	// It pins what the case spent. -1 means none left.
	Remaining int
}

// Bearer is the metadata of an "authorization" key of "Bearer <token>".
func Bearer(token string) map[string][]string {
	return map[string][]string{"authorization": {"Bearer " + token}}
}

func apiKey(token string) map[string][]string {
	return map[string][]string{"x-api-key": {token}}
}

func with(md map[string][]string, k, v string) map[string][]string {
	md[k] = append(md[k], v)
	return md
}

// The message every refusal of a key carries, whatever the reason.
const unauthenticated = "A valid API key is required."

// Cases is the table both adapters pass.
func Cases() []Case {
	unauth := func(name string, k Key) Case {
		return Case{Name: name, Key: k, Method: Echo, Want: rpcauth.Unauthenticated, Check: message(unauthenticated)}
	}
	badRequest := func(name string, md func(string) map[string][]string) Case {
		return Case{Name: name, MD: md, Method: Echo, Want: rpcauth.InvalidArgument,
			Check: message("The request carries its credentials in a malformed way.")}
	}
	return []Case{
		{Name: "bearer", Method: Echo, Replies: 1, SeesKey: true, Check: all(
			header("Ratelimit-Policy", `"daily";q=1000;w=86400`),
			header("Ratelimit", `"daily";r=999;t=43200`),
			saw("authorization", "Bearer "), // not hidden
		), Remaining: 998},
		{Name: "bearer scheme in any case", MD: func(tok string) map[string][]string {
			return map[string][]string{"authorization": {"bEaReR  " + tok + " "}}
		}, Method: Echo, Replies: 1, SeesKey: true},
		{Name: "x-api-key", MD: apiKey, Method: Echo, Replies: 1, SeesKey: true, Check: saw("x-api-key", "sk_test_")},
		{Name: "no key", MD: func(string) map[string][]string { return map[string][]string{"x-trace": {"t"}} },
			Method: Echo, Want: rpcauth.Unauthenticated, Check: message(unauthenticated)},
		{Name: "no metadata at all", MD: func(string) map[string][]string { return nil }, Method: Echo,
			Want: rpcauth.Unauthenticated, Check: message(unauthenticated)},
		{Name: "another scheme is no key", MD: func(string) map[string][]string {
			return map[string][]string{"authorization": {"Basic dXNlcjpwdw=="}}
		}, Method: Echo, Want: rpcauth.Unauthenticated, Check: message(unauthenticated)},
		badRequest("two keys", func(tok string) map[string][]string { return with(Bearer(tok), "x-api-key", tok) }),
		badRequest("authorization twice", func(tok string) map[string][]string { return with(Bearer(tok), "authorization", "Bearer "+tok) }),
		badRequest("x-api-key twice", func(tok string) map[string][]string { return with(apiKey(tok), "x-api-key", tok) }),
		badRequest("empty bearer", func(string) map[string][]string {
			return map[string][]string{"authorization": {"Bearer "}}
		}),
		{Name: "too long", Key: Key{State: "long"}, MD: apiKey, Method: Echo, Want: rpcauth.InvalidArgument},
		unauth("malformed", Key{State: "malformed"}),
		unauth("invalid", Key{State: "invalid"}),
		unauth("revoked", Key{State: "revoked"}),
		unauth("expired", Key{State: "expired"}),
		unauth("disabled", Key{State: "disabled"}),
		unauth("paused", Key{State: "paused"}),
		unauth("suspended", Key{State: "suspended"}),
		{Name: "missing scope", Key: Key{Scopes: []string{"read"}}, Method: Write, Want: rpcauth.PermissionDenied,
			Check: all(message("The API key lacks a scope this resource requires."),
				errorInfo(rpcauth.ReasonScope, map[string]string{"scopes": "write", "match": "all"})),
			Remaining: FreeQuota - 1},
		{Name: "scope held", Key: Key{Scopes: []string{"read", "write"}}, Method: Write, Replies: 1, SeesKey: true},
		{Name: "scope above the customer's ceiling", Key: Key{Scopes: []string{"read", "write"}, State: "ceiling"},
			Method: Write, Want: rpcauth.PermissionDenied, Check: errorInfo(rpcauth.ReasonScope, nil)},
		{Name: "any scope held", Key: Key{Scopes: []string{"b"}}, Method: Either, Replies: 1, SeesKey: true},
		{Name: "any scope missing", Key: Key{Scopes: []string{"c"}}, Method: Either, Want: rpcauth.PermissionDenied,
			Check: errorInfo(rpcauth.ReasonScope, map[string]string{"scopes": "a b", "match": "any"})},
		{Name: "service rule", Key: Key{Scopes: []string{"read"}}, Method: AdminEcho, Want: rpcauth.PermissionDenied},
		{Name: "service rule held", Key: Key{Scopes: []string{"admin"}}, Method: AdminEcho, Replies: 1, SeesKey: true},
		{Name: "method rule wins over its service's", Key: Key{Scopes: []string{"read"}}, Method: AdminStatus, Replies: 1, SeesKey: true},
		{Name: "open method without a key", MD: func(string) map[string][]string { return nil }, Method: PublicEcho,
			Replies: 1, Check: noHeader("Ratelimit")},
		{Name: "open method ignores a bad key", Key: Key{State: "malformed"}, Method: PublicEcho, Replies: 1},
		{Name: "rate limited", Key: Key{Plan: "tiny"}, Before: []string{Echo, Echo}, Method: Echo,
			Want: rpcauth.ResourceExhausted, Check: all(
				message("The API key's rate limit is exceeded."),
				retryInfo(12*time.Hour),
				quotaFailure("daily", TinyQuota),
				header("Retry-After", "43200"),
				header("Ratelimit", `"daily";r=0;t=43200`),
			), Remaining: -1},
		{Name: "unmetered", Key: Key{Plan: "tiny"}, Before: []string{Echo, Echo}, Method: Free, Replies: 1, SeesKey: true,
			Check: noHeader("Ratelimit")},
		{Name: "cost per method", Method: Costly, Replies: 1, SeesKey: true,
			Check: header("Ratelimit", `"daily";r=995;t=43200`), Remaining: 994},
		{Name: "plan not configured", Key: Key{State: "unknown-plan"}, Method: Echo, Want: rpcauth.PermissionDenied,
			Check: all(message("The API key's plan is not configured on this server."), errorInfo(rpcauth.ReasonPlan, nil))},
		{Name: "store failure", Key: Key{State: "broken"}, Method: Echo, Want: rpcauth.Unavailable,
			Check: message("Authentication is temporarily unavailable.")},
		{Name: "limiter failure", Env: Failing, Method: Echo, Want: rpcauth.Unavailable,
			Check: message("Authentication is temporarily unavailable.")},
		{Name: "grace", Key: Key{State: "grace"}, Method: Echo, Replies: 1, SeesKey: true, Check: all(
			header("Deprecation", "@"+strconv.FormatInt(Now.Unix(), 10)),
			header("Sunset", Now.Add(time.Hour).Format("Mon, 02 Jan 2006 15:04:05 GMT")),
		)},
		{Name: "hidden bearer", Env: Hide, MD: func(tok string) map[string][]string {
			return with(Bearer(tok), "x-trace", "t1")
		}, Method: Echo, Replies: 1, SeesKey: true, Check: all(saw("authorization", ""), saw("x-trace", "t1"))},
		{Name: "hidden x-api-key", Env: Hide, MD: apiKey, Method: Echo, Replies: 1, SeesKey: true, Check: saw("x-api-key", "")},
		{Name: "hidden in a stream", Env: Hide, Method: Chat, N: 2, Replies: 2, SeesKey: true, Check: saw("authorization", "")},
		{Name: "deny by default", Env: Deny, Key: Key{Scopes: []string{"write"}}, Method: Write, Want: rpcauth.PermissionDenied,
			Check: all(message("The API key may not call this method."), errorInfo(rpcauth.ReasonDenied, nil))},
		{Name: "deny by default, no key", Env: Deny, MD: func(string) map[string][]string { return nil }, Method: Write,
			Want: rpcauth.Unauthenticated},
		{Name: "deny by default, listed", Env: Deny, Method: Echo, Replies: 1, SeesKey: true},
		{Name: "deny by default, open", Env: Deny, MD: func(string) map[string][]string { return nil }, Method: PublicEcho, Replies: 1},
		{Name: "cost from the request", Env: CostFn, Method: Echo, Request: map[string]any{"cost": 7}, Replies: 1, SeesKey: true,
			Check: header("Ratelimit", `"daily";r=993;t=43200`), Remaining: 992},
		{Name: "cost 0 from the request", Env: CostFn, Method: Echo, Request: map[string]any{"cost": 0}, Replies: 1, SeesKey: true,
			Check: noHeader("Ratelimit"), Remaining: FreeQuota - 1},
		{Name: "negative cost", Env: CostFn, Method: Echo, Request: map[string]any{"cost": -1}, Want: rpcauth.Internal,
			Check: message("The server could not process the request.")},
		{Name: "no limits", Env: NoLimit, Method: Echo, Replies: 1, SeesKey: true, Check: noHeader("Ratelimit")},

		{Name: "server stream", Method: Watch, N: 3, Replies: 3, SeesKey: true,
			Check: header("Ratelimit", `"daily";r=999;t=43200`), Remaining: 998},
		{Name: "server stream without a key", MD: func(string) map[string][]string { return nil }, Method: Watch, N: 3,
			Want: rpcauth.Unauthenticated, Check: message(unauthenticated)},
		{Name: "server stream, revoked key", Key: Key{State: "revoked"}, Method: Watch, N: 3,
			Want: rpcauth.Unauthenticated, Check: message(unauthenticated)},
		{Name: "server stream over the limit", Key: Key{Plan: "tiny"}, Before: []string{Echo, Echo}, Method: Watch, N: 3,
			Want: rpcauth.ResourceExhausted, Check: all(retryInfo(12*time.Hour), quotaFailure("daily", TinyQuota))},
		{Name: "bidi stream spends once", Method: Chat, N: 5, Replies: 5, SeesKey: true, Remaining: 998},
		{Name: "bidi stream, denied method", Env: Deny, Method: Chat, N: 2, Want: rpcauth.PermissionDenied},
		{Name: "bidi stream spends per message", Key: Key{Plan: "tiny"}, Method: ChatMetered, N: 4, Replies: 2, SeesKey: true,
			Want: rpcauth.ResourceExhausted, Check: all(retryInfo(12*time.Hour), quotaFailure("daily", TinyQuota)), Remaining: -1},
		{Name: "grace in a stream", Key: Key{State: "grace"}, Method: Watch, N: 1, Replies: 1, SeesKey: true,
			Check: header("Sunset", Now.Add(time.Hour).Format("Mon, 02 Jan 2006 15:04:05 GMT"))},
		{Name: "open stream", MD: func(string) map[string][]string { return nil }, Method: PublicWatch, N: 2, Replies: 2},
		// The peer (loopback, or no IP address over bufconn) lies outside
		// the key's ranges, whatever the forwarding metadata says: no
		// proxy is trusted. Nothing is spent.
		{Name: "outside the key's IP ranges", Key: Key{AllowedIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
			Method: Echo, Want: rpcauth.PermissionDenied, Check: all(
				message("The API key may not be used from this IP address: it is restricted to other IP ranges."),
				errorInfo(rpcauth.ReasonIP, nil))},
		{Name: "spoofed forwarding metadata", Key: Key{AllowedIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
			MD: func(tok string) map[string][]string {
				return with(with(Bearer(tok), "x-forwarded-for", "203.0.113.9"), "forwarded", "for=203.0.113.9")
			}, Method: Echo, Want: rpcauth.PermissionDenied, Check: errorInfo(rpcauth.ReasonIP, nil)},
	}
}

// Run runs the table against the drivers newDriver returns, one per Env
// variant.
func Run(t *testing.T, newDriver func(t *testing.T, env *Env) Driver) {
	type server struct {
		env *Env
		d   Driver
	}
	var mu sync.Mutex
	servers := map[string]*server{}
	get := func(variant string) *server {
		mu.Lock()
		defer mu.Unlock()
		if s := servers[variant]; s != nil {
			return s
		}
		env := NewEnv(t, variant)
		s := &server{env: env, d: newDriver(t, env)}
		servers[variant] = s
		return s
	}
	for _, c := range Cases() {
		t.Run(c.Name, func(t *testing.T) {
			s := get(c.Env)
			token, key := s.env.Issue(t, c.Key)
			md := Bearer(token)
			if c.MD != nil {
				md = c.MD(token)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, m := range c.Before {
				o := s.d.Unary(ctx, m, md, Request(nil))
				require.Zero(t, o.Code, "call before the case: %s", o.Message)
			}
			var o Outcome
			if isStream(c.Method) {
				o = s.d.Stream(ctx, c.Method, md, c.N)
			} else {
				o = s.d.Unary(ctx, c.Method, md, Request(c.Request))
			}
			assert.Equal(t, c.Want, o.Code, "code; message %q", o.Message)
			assert.NotContains(t, o.Message, Secret)
			assert.Len(t, o.Replies, c.Replies)
			for _, r := range o.Replies {
				if c.SeesKey {
					assert.Equal(t, key.ID, field(r, "key"), "the handler's apikey.FromContext")
				} else {
					assert.Empty(t, field(r, "key"), "the handler's apikey.FromContext")
				}
			}
			if c.Want != 0 {
				assert.NotEmpty(t, o.Message)
			}
			if c.Check != nil {
				c.Check(t, key, o)
			}
			if c.Remaining != 0 {
				after := s.d.Unary(ctx, Echo, md, Request(nil))
				if c.Remaining < 0 {
					assert.Equal(t, rpcauth.ResourceExhausted, after.Code)
				} else {
					assert.Equal(t, `"daily";r=`+strconv.Itoa(c.Remaining)+`;t=43200`, after.Header.Get("Ratelimit"), "what the case spent")
				}
			}
		})
	}
}

func isStream(method string) bool {
	for _, names := range streamMethods {
		for _, n := range names {
			if strings.HasSuffix(method, "/"+n) {
				return true
			}
		}
	}
	return false
}

func field(s *structpb.Struct, name string) string { return s.GetFields()[name].GetStringValue() }

func all(checks ...func(*testing.T, *apikey.Key, Outcome)) func(*testing.T, *apikey.Key, Outcome) {
	return func(t *testing.T, k *apikey.Key, o Outcome) {
		for _, c := range checks {
			c(t, k, o)
		}
	}
}

func message(want string) func(*testing.T, *apikey.Key, Outcome) {
	return func(t *testing.T, _ *apikey.Key, o Outcome) { assert.Equal(t, want, o.Message) }
}

func header(name, want string) func(*testing.T, *apikey.Key, Outcome) {
	return func(t *testing.T, _ *apikey.Key, o Outcome) {
		assert.Equal(t, []string{want}, o.Header.Values(name), "response header %s", name)
	}
}

func noHeader(name string) func(*testing.T, *apikey.Key, Outcome) {
	return func(t *testing.T, _ *apikey.Key, o Outcome) {
		assert.Empty(t, o.Header.Values(name), "response header %s", name)
	}
}

// saw checks that every reply saw metadata name with a value starting
// with prefix ("": none).
func saw(name, prefix string) func(*testing.T, *apikey.Key, Outcome) {
	return func(t *testing.T, _ *apikey.Key, o Outcome) {
		require.NotEmpty(t, o.Replies)
		for _, r := range o.Replies {
			if prefix == "" {
				assert.Empty(t, field(r, name), "the handler's %s", name)
			} else {
				assert.True(t, strings.HasPrefix(field(r, name), prefix), "the handler's %s: %q", name, field(r, name))
			}
		}
	}
}

func detail[T proto.Message](t *testing.T, o Outcome) T {
	t.Helper()
	for _, d := range o.Details {
		if m, ok := d.(T); ok {
			return m
		}
	}
	var zero T
	t.Fatalf("no %T detail in %v", zero, o.Details)
	return zero
}

func errorInfo(reason string, md map[string]string) func(*testing.T, *apikey.Key, Outcome) {
	return func(t *testing.T, _ *apikey.Key, o Outcome) {
		ei := detail[*errdetails.ErrorInfo](t, o)
		assert.Equal(t, reason, ei.GetReason())
		assert.Equal(t, "apikey", ei.GetDomain())
		if md != nil {
			assert.Equal(t, md, ei.GetMetadata())
		}
	}
}

func retryInfo(want time.Duration) func(*testing.T, *apikey.Key, Outcome) {
	return func(t *testing.T, _ *apikey.Key, o Outcome) {
		ri := detail[*errdetails.RetryInfo](t, o)
		assert.Equal(t, want, ri.GetRetryDelay().AsDuration())
	}
}

func quotaFailure(id string, value int64) func(*testing.T, *apikey.Key, Outcome) {
	return func(t *testing.T, _ *apikey.Key, o Outcome) {
		qf := detail[*errdetails.QuotaFailure](t, o)
		require.Len(t, qf.GetViolations(), 1)
		v := qf.GetViolations()[0]
		assert.Equal(t, id, v.GetQuotaId())
		assert.Equal(t, value, v.GetQuotaValue())
		assert.Equal(t, "limit:"+id, v.GetSubject())
	}
}
