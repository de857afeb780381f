package adminhttp

import (
	_ "embed"
	"net/http"
)

// openAPIDocument is the OpenAPI 3.1 description of the Handler's routes,
// checked against the Handler's real answers by the tests.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPI returns the OpenAPI 3.1 document (JSON) that GET
// /admin/openapi.json serves. The caller may change the returned copy,
// e.g. to add servers or the security scheme of the operator's
// authentication.
func OpenAPI() []byte { return append([]byte(nil), openAPIDocument...) }

// openAPI serves GET /admin/openapi.json.
func (h *Handler) openAPI(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.Write(openAPIDocument)
}
