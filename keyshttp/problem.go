package keyshttp

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/gokeys/apikey"
	"github.com/gokeys/apikey/internal/httpjson"
	"github.com/gokeys/apikey/selfservice"
)

// fieldError is bad input. It holds the field at fault and a sentence for
// people.
type fieldError struct {
	status int // 400 when 0
	field  string
	detail string
}

func (e *fieldError) Error() string { return e.field + ": " + e.detail }

func badField(field, detail string) *fieldError { return &fieldError{field: field, detail: detail} }

// writeProblem and writeJSON write the handler's answers.
var (
	writeProblem = httpjson.WriteProblem
	writeJSON    = httpjson.WriteJSON
)

// fail answers err: a field error or an outcome with its status, anything
// else as 503 without the dependency's message.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var fe *fieldError
	var forbidden *selfservice.FieldError
	var input *apikey.InputError
	switch {
	case errors.As(err, &fe):
		status := fe.status
		if status == 0 {
			status = http.StatusBadRequest
		}
		writeProblem(w, status, fe.detail, fe.field)
	case errors.As(err, &forbidden):
		writeProblem(w, http.StatusForbidden, fmt.Sprintf("You may not set %s: %s.", forbidden.Field, forbidden.Reason), forbidden.Field)
	case errors.Is(err, apikey.ErrSuspended):
		writeProblem(w, http.StatusForbidden, "Your account is suspended: you may list and revoke your keys and read their usage, nothing else.", "")
	case errors.As(err, &input):
		field := input.Field
		if field == "grace" {
			field = "grace_seconds"
		}
		writeProblem(w, http.StatusBadRequest, "Invalid "+field+": "+input.Reason+".", field)
	case errors.Is(err, apikey.ErrTooManyKeys):
		writeProblem(w, http.StatusConflict, "You have the most usable keys allowed; revoke one before creating another.", "")
	case errors.Is(err, apikey.ErrNotFound):
		writeProblem(w, http.StatusNotFound, "No such key.", "")
	case errors.Is(err, apikey.ErrRevoked):
		writeProblem(w, http.StatusConflict, "The key is revoked: it cannot change any more.", "")
	case errors.Is(err, apikey.ErrRotated):
		writeProblem(w, http.StatusConflict, "The key has been rotated: it cannot be rotated again, nor its grace period extended.", "")
	case errors.Is(err, apikey.ErrExpired):
		writeProblem(w, http.StatusConflict, "The key has expired: it cannot change any more.", "")
	case errors.Is(err, apikey.ErrConflict):
		writeProblem(w, http.StatusConflict, "The key was changed concurrently; retry.", "")
	case errors.Is(err, apikey.ErrInvalidOptions):
		writeProblem(w, http.StatusBadRequest, "The request cannot be carried out with these values.", "body")
	default:
		if h.log != nil && r.Context().Err() == nil {
			h.log.ErrorContext(r.Context(), "keyshttp: store failed", "method", r.Method, "path", r.URL.Path, "error", err.Error())
		}
		w.Header().Set("Retry-After", h.retryAfter)
		writeProblem(w, http.StatusServiceUnavailable, "The key store is unavailable; retry later.", "")
	}
}
