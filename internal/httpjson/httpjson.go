// Package httpjson writes the JSON and RFC 9457 problem answers of the
// management handlers (keyshttp, adminhttp). The answers are never cached
// and never sniffed.
package httpjson

import (
	"encoding/json"
	"net/http"
)

// Problem is an RFC 9457 problem detail. Field, an extension member, names
// the request field (JSON member, path segment, query parameter or header)
// at fault.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Field  string `json:"field,omitempty"`
}

// WriteProblem answers status with a problem whose detail is detail and
// whose field, when not empty, is field.
func WriteProblem(w http.ResponseWriter, status int, detail, field string) {
	write(w, status, "application/problem+json",
		Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Field: field})
}

// WriteJSON answers v as JSON. Management answers are private to their
// caller and never cached.
func WriteJSON(w http.ResponseWriter, status int, v any) { write(w, status, "application/json", v) }

func write(w http.ResponseWriter, status int, contentType string, v any) {
	hd := w.Header()
	hd.Set("Content-Type", contentType)
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
