// Package apikey issues, stores and verifies API keys for net/http services.
//
// A token looks like sk_live_4f8Gq2Lx9TbN0cRw<secret><checksum>: a prefix, a
// public key id, a high-entropy secret and a CRC-32 checksum. Garbage is
// rejected by the checksum before any store access, the record is found by
// its id in O(1), and the secret is checked against an HMAC-SHA-256 digest
// keyed by a server-side pepper, in constant time. Stores never see a
// token, only its digest, and nothing is written to the store on the
// request path: last-used times are coalesced and flushed in batches.
//
//	store := memstore.New()
//	m, err := apikey.New(store, apikey.Options{
//		Prefix:  "sk_live",
//		Peppers: []apikey.Pepper{{Version: "1", Secret: pepper}},
//	})
//	if err != nil { ... }
//	defer m.Close(context.Background())
//
//	token, key, err := m.Issue(ctx, apikey.IssueParams{Owner: "alice", Scopes: []string{"read"}})
//	// Show token to the user once; store nothing but key.ID.
//
//	mw, err := apikey.NewMiddleware(m, apikey.MiddlewareOptions{Realm: "api"})
//	mux.Handle("GET /data", mw.Handler(http.HandlerFunc(data)))
//	// In data: key := apikey.FromContext(r.Context())
//
// The Manager, the Middleware and every Store and Limiter of this module are
// safe for concurrent use.
package apikey
