package keyshttp

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/selfservice"
)

// openAPITemplate is the OpenAPI 3.1 description of the Handler's routes,
// without what depends on the Handler. That is its servers, security
// scheme and license. The tests check it against the Handler's real
// answers.
//
//go:embed openapi.json
var openAPITemplate []byte

// Document describes the API in the OpenAPI document the Handler serves.
// The zero value is valid. See each field's default.
type Document struct {
	// Security is how a caller authenticates to the Owner hook, declared
	// as the document's security scheme "owner". When its Type is empty
	// it is derived from Options.Challenge ("Basic ..." is HTTP Basic,
	// "Bearer ..." a bearer token, any other auth-scheme that HTTP
	// scheme), else a session cookie named "session".
	Security SecurityScheme
	// License is the license of the API. When Name is empty, it is named
	// "Proprietary" with the identifier "LicenseRef-Proprietary".
	License License
}

// SecurityScheme is an OpenAPI security scheme (without OAuth 2.0
// flows). It describes the credentials the Owner hook reads.
type SecurityScheme struct {
	// Type is "http", "apiKey", "openIdConnect" or "mutualTLS".
	Type string
	// Scheme is the HTTP auth-scheme of type "http", e.g. "basic" or
	// "bearer".
	Scheme string
	// BearerFormat hints at the format of a bearer token, e.g. "JWT".
	BearerFormat string
	// In is where type "apiKey" is sent, one of "header", "query" and
	// "cookie". Name is the header, parameter or cookie name.
	In, Name string
	// OpenIDConnectURL is the discovery URL of type "openIdConnect".
	OpenIDConnectURL string
	// Description says more, for people.
	Description string
}

// License is the license of the API.
type License struct {
	// Name is the license's name, e.g. "Apache 2.0" or "Proprietary".
	Name string
	// Identifier is its SPDX identifier, or URL a link to it. At most one
	// of the two is set.
	Identifier, URL string
}

// document is the OpenAPI document of a Handler, rendered once per mount
// point (the last one is kept).
type document struct {
	doc  map[string]any
	last atomic.Pointer[rendered]
}

type rendered struct {
	base string
	body []byte
}

// newDocument completes the template with the security scheme, the
// license and the policy's bounds.
func newDocument(d Document, challenge string, p *selfservice.Policy) (*document, error) {
	var doc map[string]any
	if err := json.Unmarshal(openAPITemplate, &doc); err != nil {
		return nil, fmt.Errorf("keyshttp: the embedded OpenAPI document: %w", err)
	}
	scheme, err := securityScheme(d.Security, challenge)
	if err != nil {
		return nil, err
	}
	doc["components"].(map[string]any)["securitySchemes"] = map[string]any{"owner": scheme}
	lic := map[string]any{"name": d.License.Name}
	switch {
	case d.License.Name == "":
		lic["name"], lic["identifier"] = "Proprietary", "LicenseRef-Proprietary"
	case d.License.Identifier != "" && d.License.URL != "":
		return nil, fmt.Errorf("%w: keyshttp: Document.License: set Identifier or URL, not both", apikey.ErrInvalidOptions)
	case d.License.Identifier != "":
		lic["identifier"] = d.License.Identifier
	case d.License.URL != "":
		if _, err := url.Parse(d.License.URL); err != nil {
			return nil, fmt.Errorf("%w: keyshttp: Document.License.URL: %w", apikey.ErrInvalidOptions, err)
		}
		lic["url"] = d.License.URL
	}
	doc["info"].(map[string]any)["license"] = lic
	// The bounds of the policy, where the document states them.
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	set := func(schema, member string, max int64) {
		props := schemas[schema].(map[string]any)["properties"].(map[string]any)
		props[member].(map[string]any)["maximum"] = max
	}
	set("RotateKeyRequest", "grace_seconds", int64(p.MaxGrace()/time.Second))
	set("CreateKeyRequest", "ttl_seconds", int64(min(p.MaxLifetime()/time.Second, maxTTLSeconds)))
	set("CreateKeyRequest", "expires_in_days", int64(min(p.MaxLifetime()/(24*time.Hour), maxExpiresInDays)))
	return &document{doc: doc}, nil
}

// securityScheme returns the OpenAPI security scheme object of s, or the
// one derived from the challenge.
func securityScheme(s SecurityScheme, challenge string) (map[string]any, error) {
	if s.Type == "" {
		scheme, _, _ := strings.Cut(strings.TrimSpace(challenge), " ")
		switch {
		case scheme != "":
			s = SecurityScheme{Type: "http", Scheme: strings.ToLower(scheme)}
		default:
			s = SecurityScheme{Type: "apiKey", In: "cookie", Name: "session",
				Description: "The session of the service's sign-in."}
		}
	}
	out := map[string]any{"type": s.Type}
	if s.Description != "" {
		out["description"] = s.Description
	}
	bad := func(what string) error {
		return fmt.Errorf("%w: keyshttp: Document.Security: %s", apikey.ErrInvalidOptions, what)
	}
	switch s.Type {
	case "http":
		if s.Scheme == "" {
			return nil, bad(`type "http" needs a Scheme`)
		}
		out["scheme"] = s.Scheme
		if s.BearerFormat != "" {
			out["bearerFormat"] = s.BearerFormat
		}
	case "apiKey":
		if s.In != "header" && s.In != "query" && s.In != "cookie" || s.Name == "" {
			return nil, bad(`type "apiKey" needs In (header, query or cookie) and a Name`)
		}
		out["in"], out["name"] = s.In, s.Name
	case "openIdConnect":
		if s.OpenIDConnectURL == "" {
			return nil, bad(`type "openIdConnect" needs an OpenIDConnectURL`)
		}
		out["openIdConnectUrl"] = s.OpenIDConnectURL
	case "mutualTLS":
	default:
		return nil, bad(fmt.Sprintf("unknown type %q", s.Type))
	}
	return out, nil
}

// render returns the document for the mount point base ("" for the root):
// its server is base, so that every path resolves under it.
func (d *document) render(base string) []byte {
	if r := d.last.Load(); r != nil && r.base == base {
		return r.body
	}
	doc := maps.Clone(d.doc)
	server := base
	if server == "" {
		server = "/"
	}
	doc["servers"] = []any{map[string]any{
		"url":         server,
		"description": "Where the API is mounted, relative to this document.",
	}}
	body, err := json.MarshalIndent(doc, "", "  ")
	if err != nil { // a map of JSON values always marshals
		panic(err)
	}
	d.last.Store(&rendered{base: base, body: body})
	return body
}

// OpenAPI returns the OpenAPI 3.1 document (JSON) of h mounted at base,
// e.g. "/v1" for a Handler served under http.StripPrefix("/v1", h), or ""
// at the root. GET /openapi.json serves the same for the mount point it
// was requested under. The caller may change the returned slice.
func (h *Handler) OpenAPI(base string) []byte {
	return append([]byte(nil), h.doc.render(strings.TrimSuffix(base, "/"))...)
}

// openAPI serves GET /openapi.json. It needs no owner.
func (h *Handler) openAPI(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "public, max-age=3600")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.Write(h.doc.render(mountPoint(r)))
}

// mountPoint returns the path prefix that was stripped from r before it
// reached the Handler (by http.StripPrefix): the request URI's path
// without the path the Handler saw. It is "" at the root.
func mountPoint(r *http.Request) string {
	full := r.RequestURI
	if full == "" {
		return ""
	}
	u, err := url.ParseRequestURI(full)
	if err != nil {
		return ""
	}
	seen := r.URL.EscapedPath()
	base, ok := strings.CutSuffix(u.EscapedPath(), seen)
	if !ok || base == "" || base[0] != '/' {
		return ""
	}
	return strings.TrimSuffix(base, "/")
}
