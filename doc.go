// Package apikey issues, stores and verifies API keys for net/http services.
//
// A token looks like sk_live_4f8Gq2Lx9TbN0cRw<secret><checksum>. It is a
// prefix, a public key id, a high-entropy secret and a CRC-32 checksum.
// The checksum rejects garbage before any store access. The record is
// found by its id in O(1). The secret is checked in constant time against
// an HMAC-SHA-256 digest keyed by a server-side pepper. Stores never see a
// token, only its digest. Nothing is written to the store on the request
// path, because last-used times are coalesced and flushed in batches.
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
