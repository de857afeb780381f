package adminhttp

import (
	"errors"
	"net/http"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/httpjson"
)

// writeProblem and writeJSON write the handler's answers.
var (
	writeProblem = httpjson.WriteProblem
	writeJSON    = httpjson.WriteJSON
)

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
