package adminhttp

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gokeys/apikey"
)

// problemBody is an RFC 9457 problem detail. Field, an extension member,
// names the request field (JSON member, path segment, query parameter or
// header) at fault.
type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Field  string `json:"field,omitempty"`
}

func writeProblem(w http.ResponseWriter, status int, detail, field string) {
	write(w, status, "application/problem+json",
		problemBody{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Field: field})
}

// writeJSON answers v as JSON. Operator answers are never cached.
func writeJSON(w http.ResponseWriter, status int, v any) { write(w, status, "application/json", v) }

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

// fail answers err: bad input with the field it names, an outcome with its
// status, anything else as 503 without the dependency's message.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var in *apikey.InputError
	switch {
	case errors.As(err, &in):
		writeProblem(w, http.StatusBadRequest, "Invalid "+in.Field+": "+in.Reason+".", in.Field)
	case errors.Is(err, apikey.ErrInvalidInput):
		writeProblem(w, http.StatusBadRequest, "Invalid input.", "body")
	case errors.Is(err, errPrecondition):
		writeProblem(w, http.StatusPreconditionFailed, "The customer changed since it was read (If-Match); read it again.", "")
	case errors.Is(err, apikey.ErrConflict):
		writeProblem(w, http.StatusConflict, "The customer was changed concurrently; retry.", "")
	case errors.Is(err, errors.ErrUnsupported):
		writeProblem(w, http.StatusNotImplemented, "The key store keeps no customer records.", "")
	default:
		if h.log != nil && r.Context().Err() == nil {
			h.log.ErrorContext(r.Context(), "adminhttp: store failed", "method", r.Method, "path", r.URL.Path, "error", err.Error())
		}
		w.Header().Set("Retry-After", h.retryAfter)
		writeProblem(w, http.StatusServiceUnavailable, "The customer store is unavailable; retry later.", "")
	}
}
