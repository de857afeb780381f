package apikey

import (
	"net/http"
	"testing"
)

// defaultSource reads X-API-Key by its canonical name, spelled out.
func TestDefaultSourceReadsTheCanonicalName(t *testing.T) {
	if got := http.CanonicalHeaderKey(headerAPIKey); got != "X-Api-Key" {
		t.Fatalf("canonical %s is %q: update defaultSource", headerAPIKey, got)
	}
}
