package keyshttp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/keyshttp"
	"github.com/gokeys/apikey/selfservice"
)

// spec is the OpenAPI document, read as plain JSON, with a small checker
// for the part of JSON Schema 2020-12 the document uses. It records which
// operation answered which status, so a test can require that every
// documented status was seen and nothing undocumented was.
type spec struct {
	doc map[string]any

	mu   sync.Mutex
	seen map[string]bool // "POST /api-keys 201"
}

func loadSpec(t *testing.T, h *keyshttp.Handler) *spec {
	t.Helper()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(h.OpenAPI(""), &doc))
	require.Equal(t, "3.1.0", doc["openapi"])
	return &spec{doc: doc, seen: map[string]bool{}}
}

// operations lists "METHOD /template STATUS" for every documented answer.
func (s *spec) operations() []string {
	var out []string
	for path, item := range s.doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			for status := range op.(map[string]any)["responses"].(map[string]any) {
				out = append(out, strings.ToUpper(method)+" "+path+" "+status)
			}
		}
	}
	slices.Sort(out)
	return out
}

// match finds the documented path template for a concrete path.
func (s *spec) match(path string) (string, map[string]any) {
	for tmpl, item := range s.doc["paths"].(map[string]any) {
		re := "^" + regexp.MustCompile(`\\\{[^}]+\\\}`).ReplaceAllString(regexp.QuoteMeta(tmpl), `[^/]+`) + "$"
		if regexp.MustCompile(re).MatchString(path) {
			return tmpl, item.(map[string]any)
		}
	}
	return "", nil
}

// check validates one exchange against the document and records it.
func (s *spec) check(method, path string, reqBody []byte, status int, header http.Header, body []byte) error {
	if status >= 500 && status != http.StatusNotImplemented && status != http.StatusServiceUnavailable {
		return fmt.Errorf("%s %s answered %d", method, path, status)
	}
	tmpl, item := s.match(path)
	if item == nil {
		return nil // not an API route (e.g. a 404 for an unknown path)
	}
	head := method == http.MethodHead
	if head {
		method = http.MethodGet
	}
	op, ok := item[strings.ToLower(method)].(map[string]any)
	if !ok {
		if status == http.StatusMethodNotAllowed {
			return nil
		}
		return fmt.Errorf("%s %s is not documented", method, tmpl)
	}
	key := method + " " + tmpl + " " + strconv.Itoa(status)
	r, ok := op["responses"].(map[string]any)[strconv.Itoa(status)].(map[string]any)
	if !ok {
		return fmt.Errorf("%s: status not documented", key)
	}
	r = s.resolve(r)
	for name, hv := range mapOf(r["headers"]) {
		hd := hv.(map[string]any)
		got := header.Get(name)
		if got == "" {
			if name == "Link" {
				continue // only when there is a next page
			}
			return fmt.Errorf("%s: header %s missing", key, name)
		}
		if err := s.validate(hd["schema"], got, "header "+name); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	content := mapOf(r["content"])
	if len(content) == 0 {
		if len(body) != 0 {
			return fmt.Errorf("%s: documented without content, got %q", key, body)
		}
	} else if !head {
		ct, _, err := mime.ParseMediaType(header.Get("Content-Type"))
		if err != nil {
			return fmt.Errorf("%s: Content-Type: %w", key, err)
		}
		media, ok := content[ct].(map[string]any)
		if !ok {
			return fmt.Errorf("%s: Content-Type %s not documented", key, ct)
		}
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			return fmt.Errorf("%s: body is not JSON: %w", key, err)
		}
		if err := s.validate(media["schema"], v, "body"); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	// What the handler accepted must be what the document describes.
	if status < 300 && len(strings.TrimSpace(string(reqBody))) > 0 {
		rb, ok := op["requestBody"].(map[string]any)
		if !ok {
			return fmt.Errorf("%s: accepted a body the document does not describe", key)
		}
		var v any
		if err := json.Unmarshal(reqBody, &v); err != nil {
			return fmt.Errorf("%s: request: %w", key, err)
		}
		schema := rb["content"].(map[string]any)["application/json"].(map[string]any)["schema"]
		if err := s.validate(schema, v, "request"); err != nil {
			return fmt.Errorf("%s: accepted a request the document forbids: %w", key, err)
		}
	}
	s.mu.Lock()
	s.seen[key] = true
	s.mu.Unlock()
	return nil
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// resolve follows a local $ref.
func (s *spec) resolve(v map[string]any) map[string]any {
	for {
		ref, ok := v["$ref"].(string)
		if !ok {
			return v
		}
		var cur any = s.doc
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[part]
		}
		v = cur.(map[string]any)
	}
}

// declared collects the properties a schema declares, allOf included.
func (s *spec) declared(schema map[string]any, into map[string]bool) {
	schema = s.resolve(schema)
	for name := range mapOf(schema["properties"]) {
		into[name] = true
	}
	for _, sub := range anySlice(schema["allOf"]) {
		s.declared(sub.(map[string]any), into)
	}
}

func anySlice(v any) []any {
	a, _ := v.([]any)
	return a
}

// validate checks v against schema: type, enum, format date-time,
// minimum, maximum, maxLength, pattern, maxItems, items, required,
// properties, additionalProperties, unevaluatedProperties (over allOf),
// maxProperties and allOf.
func (s *spec) validate(schemaAny any, v any, at string) error {
	schema := s.resolve(schemaAny.(map[string]any))
	for _, sub := range anySlice(schema["allOf"]) {
		if err := s.validate(sub, v, at); err != nil {
			return err
		}
	}
	if t, ok := schema["type"]; ok {
		types := []string{}
		switch t := t.(type) {
		case string:
			types = append(types, t)
		case []any:
			for _, x := range t {
				types = append(types, x.(string))
			}
		}
		if !slices.Contains(types, jsonType(v)) && !(jsonType(v) == "integer" && slices.Contains(types, "number")) {
			return fmt.Errorf("%s: %s is not of type %v", at, jsonType(v), types)
		}
	}
	if enum, ok := schema["enum"].([]any); ok && !slices.Contains(enum, v) {
		return fmt.Errorf("%s: %v is not one of %v", at, v, enum)
	}
	switch v := v.(type) {
	case string:
		if schema["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
				return fmt.Errorf("%s: %q is not a date-time", at, v)
			}
		}
		if n, ok := schema["maxLength"].(float64); ok && float64(len([]rune(v))) > n {
			return fmt.Errorf("%s: longer than %v", at, n)
		}
		if p, ok := schema["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(v) {
			return fmt.Errorf("%s: %q does not match %s", at, v, p)
		}
	case float64:
		if n, ok := schema["minimum"].(float64); ok && v < n {
			return fmt.Errorf("%s: %v below %v", at, v, n)
		}
		if n, ok := schema["maximum"].(float64); ok && v > n {
			return fmt.Errorf("%s: %v above %v", at, v, n)
		}
	case []any:
		if n, ok := schema["maxItems"].(float64); ok && float64(len(v)) > n {
			return fmt.Errorf("%s: more than %v items", at, n)
		}
		if items, ok := schema["items"]; ok {
			for i, x := range v {
				if err := s.validate(items, x, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	case map[string]any:
		if n, ok := schema["maxProperties"].(float64); ok && float64(len(v)) > n {
			return fmt.Errorf("%s: more than %v members", at, n)
		}
		for _, r := range anySlice(schema["required"]) {
			if _, ok := v[r.(string)]; !ok {
				return fmt.Errorf("%s: required member %q missing", at, r)
			}
		}
		props := mapOf(schema["properties"])
		for _, name := range slices.Sorted(maps.Keys(v)) {
			if p, ok := props[name]; ok {
				if err := s.validate(p, v[name], at+"."+name); err != nil {
					return err
				}
				continue
			}
			switch extra := schema["additionalProperties"].(type) {
			case bool:
				if !extra {
					return fmt.Errorf("%s: undocumented member %q", at, name)
				}
			case map[string]any:
				if err := s.validate(extra, v[name], at+"."+name); err != nil {
					return err
				}
			}
		}
		if schema["unevaluatedProperties"] == false {
			known := map[string]bool{}
			s.declared(schema, known)
			for name := range v {
				if !known[name] {
					return fmt.Errorf("%s: undocumented member %q", at, name)
				}
			}
		}
	}
	return nil
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case float64:
		if v == math.Trunc(v) {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// checked wraps h so that every exchange is validated against the
// document; a mismatch fails t.
func (s *spec) checked(t *testing.T, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var reqBody []byte
		if r.Body != nil {
			reqBody, _ = readAllLimited(r)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		res := rec.Result()
		if err := s.check(r.Method, r.URL.Path, reqBody, res.StatusCode, res.Header, rec.Body.Bytes()); err != nil {
			t.Errorf("OpenAPI mismatch: %v\nbody: %s", err, rec.Body.String())
		}
		maps.Copy(w.Header(), res.Header)
		w.WriteHeader(res.StatusCode)
		w.Write(rec.Body.Bytes())
	})
}

func TestOpenAPIDocumentIsWellFormed(t *testing.T) {
	t.Parallel()
	s := loadSpec(t, newEnv(t, false, nil, keyshttp.Options{}).h)
	// Every $ref resolves and every operation has an operationId.
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				assert.NotPanics(t, func() { s.resolve(v) }, ref)
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(s.doc)
	ids := map[string]bool{}
	for _, item := range s.doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			id, _ := op.(map[string]any)["operationId"].(string)
			assert.NotEmpty(t, id)
			assert.False(t, ids[id], "operationId %s twice", id)
			ids[id] = true
		}
	}
	assert.Len(t, ids, 14, "the fourteen operations of the handler")
	// Every operation but the document itself needs the owner's
	// credentials, declared once at the root.
	assert.Equal(t, []any{map[string]any{"owner": []any{}}}, s.doc["security"])
	assert.Equal(t, []any{}, s.doc["paths"].(map[string]any)["/openapi.json"].(map[string]any)["get"].(map[string]any)["security"])
}

// The checker itself must catch what it claims to catch.
func TestSchemaCheckerCatchesMismatches(t *testing.T) {
	t.Parallel()
	s := loadSpec(t, newEnv(t, false, nil, keyshttp.Options{}).h)
	key := map[string]any{"$ref": "#/components/schemas/Key"}
	good := map[string]any{
		"id": "a", "prefix": "sk", "hint": "sk_...abcd", "name": "", "scopes": []any{}, "plan": "", "metadata": map[string]any{},
		"limits": []any{}, "created_at": "2026-11-27T12:00:00Z", "expires_at": nil, "last_used_at": nil, "revoked_at": nil,
		"disabled": false, "paused": false, "rotated_at": nil, "rotated_from": nil, "rotated_to": nil, "allowed_ips": []any{},
	}
	require.NoError(t, s.validate(key, good, "key"))
	for name, change := range map[string]func(m map[string]any){
		"missing member":    func(m map[string]any) { delete(m, "disabled") },
		"undocumented":      func(m map[string]any) { m["hash"] = "x" },
		"wrong type":        func(m map[string]any) { m["disabled"] = "no" },
		"bad date-time":     func(m map[string]any) { m["created_at"] = "yesterday" },
		"null not allowed":  func(m map[string]any) { m["created_at"] = nil },
		"bad nested member": func(m map[string]any) { m["metadata"] = map[string]any{"a": 1.0} },
	} {
		m := maps.Clone(good)
		change(m)
		assert.Error(t, s.validate(key, m, "key"), name)
	}
	created := maps.Clone(good)
	created["key"], created["note"] = "sk_x", "n"
	assert.NoError(t, s.validate(map[string]any{"$ref": "#/components/schemas/CreatedKey"}, created, "created"))
	created["token"] = "x"
	assert.Error(t, s.validate(map[string]any{"$ref": "#/components/schemas/CreatedKey"}, created, "created"), "unevaluated member")
	assert.Error(t, s.check("GET", "/api-keys/x", nil, 418, http.Header{}, nil), "undocumented status")
	assert.Error(t, s.check("GET", "/api-keys/x", nil, 500, http.Header{}, nil), "never a 500")
}

// The served document is the document of the mount point: its server is
// the prefix the handler was mounted under, and every documented path,
// resolved against it, reaches the documented operation.
func TestOpenAPIDocumentOfTheMountPoint(t *testing.T) {
	t.Parallel()
	for _, base := range []string{"", "/v1", "/api/v2"} {
		t.Run("at "+base+"/", func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, false, nil, keyshttp.Options{})
			if base != "" {
				e.srv.Config.Handler = http.StripPrefix(base, e.srv.Config.Handler)
			}
			r := e.do("", "GET", base+"/openapi.json", "")
			require.Equal(t, 200, r.status, r.raw)
			server := base
			if server == "" {
				server = "/"
			}
			servers := r.body["servers"].([]any)
			require.Len(t, servers, 1)
			assert.Equal(t, server, servers[0].(map[string]any)["url"])
			assert.JSONEq(t, string(e.h.OpenAPI(base)), r.raw, "OpenAPI(base) is what is served there")

			created := e.do("alice", "POST", base+"/api-keys", "")
			require.Equal(t, 201, created.status, created.raw)
			id := created.body["id"].(string)
			for path, item := range r.body["paths"].(map[string]any) {
				for method := range item.(map[string]any) {
					if method == "parameters" {
						continue
					}
					url := strings.TrimSuffix(server, "/") + strings.ReplaceAll(path, "{id}", id)
					if method == "delete" || strings.HasSuffix(path, "revoke-chain") {
						continue // keep the key
					}
					got := e.do("alice", strings.ToUpper(method), url, "")
					assert.NotEqual(t, 404, got.status, "%s %s: %s", method, url, got.raw)
					assert.NotEqual(t, 405, got.status, "%s %s", method, url)
				}
			}
		})
	}
}

// The document declares how callers authenticate, once for every
// operation but the document itself, and the API's license.
func TestOpenAPIDeclaresSecurityAndLicense(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		opts keyshttp.Options
		want map[string]any
	}{
		{"default: a session cookie", keyshttp.Options{},
			map[string]any{"type": "apiKey", "in": "cookie", "name": "session", "description": "The session of the service's sign-in."}},
		{"from the Basic challenge", keyshttp.Options{Challenge: `Basic realm="keys"`},
			map[string]any{"type": "http", "scheme": "basic"}},
		{"from a Bearer challenge", keyshttp.Options{Challenge: `Bearer realm="keys"`},
			map[string]any{"type": "http", "scheme": "bearer"}},
		{"given", keyshttp.Options{Document: keyshttp.Document{
			Security: keyshttp.SecurityScheme{Type: "http", Scheme: "bearer", BearerFormat: "JWT"},
			License:  keyshttp.License{Name: "Apache 2.0", Identifier: "Apache-2.0"},
		}}, map[string]any{"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
	} {
		e := newEnv(t, false, nil, c.opts)
		var doc map[string]any
		require.NoError(t, json.Unmarshal(e.h.OpenAPI(""), &doc))
		schemes := doc["components"].(map[string]any)["securitySchemes"].(map[string]any)
		assert.Equal(t, c.want, schemes["owner"], c.name)
		assert.Equal(t, []any{map[string]any{"owner": []any{}}}, doc["security"], c.name)
		license := doc["info"].(map[string]any)["license"].(map[string]any)
		assert.NotEmpty(t, license["name"], c.name)
		assert.True(t, license["identifier"] != nil || license["url"] != nil, c.name)
	}
}

// Redocly CLI's recommended rules find no error in the served document.
// The test needs npx (Node.js) and the npm registry; it skips without
// them.
func TestRedoclyLintsTheServedDocument(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs npx")
	}
	npx, err := exec.LookPath("npx")
	if err != nil {
		t.Skip("npx is not installed")
	}
	e := newEnv(t, false, &selfservice.Options{Scopes: []string{"read"}}, keyshttp.Options{Challenge: `Basic realm="keys"`})
	e.srv.Config.Handler = http.StripPrefix("/v1", e.srv.Config.Handler)
	r := e.do("", "GET", "/v1/openapi.json", "")
	require.Equal(t, 200, r.status)
	dir := t.TempDir()
	path := filepath.Join(dir, "openapi.json")
	require.NoError(t, os.WriteFile(path, []byte(r.raw), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npx, "--yes", "@redocly/cli@2", "lint", "--format=json", path)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output() // exits 1 when it finds errors
	var report struct {
		Totals struct {
			Errors, Warnings int
		}
		Problems []struct {
			RuleID, Severity, Message string
			Location                  []struct{ Pointer string }
		}
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Skipf("Redocly CLI could not be run (no npm registry?): %v\n%s", err, stderr.String())
	}
	for _, p := range report.Problems {
		where := ""
		if len(p.Location) > 0 {
			where = p.Location[0].Pointer
		}
		if p.Severity == "error" {
			t.Errorf("%s %s: %s", p.RuleID, where, p.Message)
		} else {
			t.Logf("%s: %s %s: %s", p.Severity, p.RuleID, where, p.Message)
		}
	}
	assert.Zero(t, report.Totals.Errors)
}
