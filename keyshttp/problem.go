package keyshttp

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gokeys/apikey"
)

// problemBody is an RFC 9457 problem detail. Field, an extension member,
// names the request field (JSON member or query parameter) at fault.
type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Field  string `json:"field,omitempty"`
}

// fieldError is bad input: the field at fault and a sentence for people.
type fieldError struct {
	status int // 400 when 0
	field  string
	detail string
}

func (e *fieldError) Error() string { return e.field + ": " + e.detail }

func badField(field, detail string) *fieldError { return &fieldError{field: field, detail: detail} }

func writeProblem(w http.ResponseWriter, status int, detail, field string) {
	write(w, status, "application/problem+json",
		problemBody{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail, Field: field})
}

// writeJSON answers v as JSON. Management answers are private to their
// caller and never cached.
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

// fail answers err: a field error or an outcome with its status, anything
// else as 503 without the dependency's message.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var fe *fieldError
	switch {
	case errors.As(err, &fe):
		status := fe.status
		if status == 0 {
			status = http.StatusBadRequest
		}
		writeProblem(w, status, fe.detail, fe.field)
	case errors.Is(err, apikey.ErrNotFound), errors.Is(err, errNotOwned):
		writeProblem(w, http.StatusNotFound, "No such key.", "")
	case errors.Is(err, apikey.ErrRevoked):
		writeProblem(w, http.StatusConflict, "The key is revoked.", "")
	case errors.Is(err, apikey.ErrRotated):
		writeProblem(w, http.StatusConflict, "The key has already been rotated.", "")
	case errors.Is(err, apikey.ErrExpired):
		writeProblem(w, http.StatusConflict, "The key has expired.", "")
	case errors.Is(err, apikey.ErrDisabled):
		writeProblem(w, http.StatusConflict, "The key is disabled; enable it first.", "")
	case errors.Is(err, apikey.ErrConflict):
		writeProblem(w, http.StatusConflict, "The key was changed concurrently; retry.", "")
	case errors.Is(err, apikey.ErrInvalidOptions):
		f := managerField(err)
		writeProblem(w, http.StatusBadRequest, "Invalid "+f+": "+managerDetail(err), f)
	default:
		if h.log != nil && r.Context().Err() == nil {
			h.log.ErrorContext(r.Context(), "keyshttp: store failed", "method", r.Method, "path", r.URL.Path, "error", err.Error())
		}
		w.Header().Set("Retry-After", h.retryAfter)
		writeProblem(w, http.StatusServiceUnavailable, "The key store is unavailable; retry later.", "")
	}
}
