package adminhttp_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gokeys/apikey/adminhttp"
)

// The document's references resolve, each operation has a distinct
// operationId, and it describes exactly the routes of the handler; the
// openapicheck module validates real answers against it.
func TestOpenAPIDocumentIsWellFormed(t *testing.T) {
	t.Parallel()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(adminhttp.OpenAPI(), &doc))
	require.Equal(t, "3.1.0", doc["openapi"])
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				var cur any = doc
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					m, _ := cur.(map[string]any)
					cur = m[part]
				}
				assert.NotNil(t, cur, "%s resolves", ref)
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
	walk(doc)
	var routes []string
	ids := map[string]bool{}
	for path, item := range doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			if method == "parameters" {
				continue
			}
			routes = append(routes, strings.ToUpper(method)+" "+path)
			id, _ := op.(map[string]any)["operationId"].(string)
			assert.NotEmpty(t, id)
			assert.False(t, ids[id], "operationId %s twice", id)
			ids[id] = true
		}
	}
	slices.Sort(routes)
	assert.Equal(t, []string{
		"GET /admin/customers", "GET /admin/customers/{id}", "GET /admin/openapi.json", "PUT /admin/customers/{id}",
	}, routes)
}
