package selfservice

import (
	"encoding/base64"
	"encoding/binary"
	"time"

	"github.com/gokeys/apikey"
)

// maxCursorLength bounds what ParseCursor reads.
const maxCursorLength = 256

// FormatCursor encodes c for a URL (a query parameter or a link). It returns
// an opaque, URL-safe string that ParseCursor reads back. The zero Cursor is
// the empty string.
func FormatCursor(c apikey.Cursor) string {
	if c.IsZero() {
		return ""
	}
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(c.ID)), uint64(c.CreatedAt.UnixMicro()))
	return base64.RawURLEncoding.EncodeToString(append(b, c.ID...))
}

// ParseCursor decodes a cursor made by FormatCursor. The empty string is
// the zero Cursor (the first page). Anything else is an
// *apikey.InputError for the field "after".
func ParseCursor(s string) (apikey.Cursor, error) {
	if s == "" {
		return apikey.Cursor{}, nil
	}
	bad := &apikey.InputError{Field: "after", Reason: "not a cursor of a previous page"}
	if len(s) > maxCursorLength {
		return apikey.Cursor{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) <= 8 {
		return apikey.Cursor{}, bad
	}
	id := string(b[8:])
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == '-') {
			return apikey.Cursor{}, bad
		}
	}
	at := time.UnixMicro(int64(binary.BigEndian.Uint64(b[:8]))).UTC()
	return apikey.Cursor{CreatedAt: at, ID: id}, nil
}
