package sqlstore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gokeys/apikey"
)

// Dialect selects the SQL flavour of a Store, which is Postgres, MySQL or
// SQLite. The zero value is not a dialect, and New rejects it. A Dialect is a
// plain value, safe for concurrent use.
type Dialect uint8

// The supported dialects.
const (
	// Postgres is PostgreSQL 12 or later, e.g. through
	// github.com/jackc/pgx/v5/stdlib.
	Postgres Dialect = iota + 1
	// MySQL is MySQL 8 or MariaDB 10.5 or later, through
	// github.com/go-sql-driver/mysql. The DSN needs no parseTime or loc
	// parameter, since times are written and read in UTC whatever they are.
	MySQL
	// SQLite is SQLite 3.35 or later, e.g. through modernc.org/sqlite.
	SQLite
)

// String returns the dialect's name, which is "postgres", "mysql" or "sqlite".
func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case MySQL:
		return "mysql"
	case SQLite:
		return "sqlite"
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

func (d Dialect) valid() bool { return d >= Postgres && d <= SQLite }

// quote quotes an identifier that parseTable validated.
func (d Dialect) quote(ident string) string {
	if d == MySQL {
		return "`" + ident + "`"
	}
	return `"` + ident + `"`
}

// rebind rewrites the "?" placeholders of q for d: PostgreSQL numbers
// them ($1, $2, ...). The queries of this package contain no other "?".
func (d Dialect) rebind(q string) string {
	if d != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for _, part := range strings.Split(q, "?") {
		if n > 0 {
			b.WriteString("$" + strconv.Itoa(n))
		}
		b.WriteString(part)
		n++
	}
	return b.String()
}

// mysqlTime is the text form of a DATETIME(6) value.
const mysqlTime = "2006-01-02 15:04:05.999999"

// timeArg is the query argument for t: NULL for the zero time, otherwise
// t in UTC truncated to the microsecond, as TIMESTAMPTZ (PostgreSQL), as
// DATETIME(6) text (MySQL, independent of the DSN's loc and parseTime) or
// as Unix microseconds (SQLite).
func (d Dialect) timeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	t = apikey.UTCMicro(t)
	switch d {
	case MySQL:
		return t.Format("2006-01-02 15:04:05.000000")
	case SQLite:
		return t.UnixMicro()
	}
	return t
}

// scanTime converts a time column read by the driver, to UTC truncated to
// the microsecond (apikey.UTCMicro): NULL is the zero time; PostgreSQL
// gives a time.Time; MySQL gives text, or a time.Time with parseTime=true
// whose wall clock is the stored UTC time whatever the loc parameter;
// SQLite gives Unix microseconds.
func (d Dialect) scanTime(src any) (time.Time, error) {
	t, err := d.scanRawTime(src)
	return apikey.UTCMicro(t), err
}

func (d Dialect) scanRawTime(src any) (time.Time, error) {
	switch v := src.(type) {
	case nil:
		return time.Time{}, nil
	case time.Time:
		if d == MySQL {
			y, mo, day := v.Date()
			h, mi, s := v.Clock()
			return time.Date(y, mo, day, h, mi, s, v.Nanosecond(), time.UTC), nil
		}
		return v.UTC(), nil
	case int64:
		return time.UnixMicro(v).UTC(), nil
	case []byte:
		return parseTimeText(string(v))
	case string:
		return parseTimeText(v)
	}
	return time.Time{}, fmt.Errorf("sqlstore: unsupported time value of type %T", src)
}

func parseTimeText(s string) (time.Time, error) {
	if s == "" || strings.HasPrefix(s, "0000-00-00") {
		return time.Time{}, nil
	}
	if t, err := time.ParseInLocation(mysqlTime, s, time.UTC); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// isRetryable reports whether err is a transaction the database aborted
// to break a deadlock or a serialization failure, which succeeds when run
// again: MySQL/MariaDB errors 1213 (ER_LOCK_DEADLOCK) and 1020
// (ER_CHECKREAD), PostgreSQL SQLSTATE 40P01 and 40001.
func (d Dialect) isRetryable(err error) bool {
	msg := err.Error()
	switch d {
	case MySQL:
		return strings.Contains(msg, "Error 1213") || strings.Contains(msg, "Error 1020")
	case Postgres:
		var s interface{ SQLState() string }
		if errors.As(err, &s) {
			return s.SQLState() == "40P01" || s.SQLState() == "40001"
		}
		return strings.Contains(msg, "(SQLSTATE 40P01)") || strings.Contains(msg, "(SQLSTATE 40001)")
	}
	return false
}

// isConflict reports whether err is a unique-key violation, without
// importing drivers:
//
//   - PostgreSQL: SQLSTATE 23505, from a SQLState() method (pgconn.PgError,
//     lib/pq's Error) or from the text "(SQLSTATE 23505)" of pgx errors.
//   - MySQL/MariaDB: error 1062 (ER_DUP_ENTRY); mysql.MySQLError has no
//     method to ask, so its text "Error 1062 ..." is matched.
//   - SQLite: extended result code 1555 (SQLITE_CONSTRAINT_PRIMARYKEY) or
//     2067 (SQLITE_CONSTRAINT_UNIQUE) from a Code() int method
//     (modernc.org/sqlite), or the text "UNIQUE constraint failed" that
//     every SQLite driver reports.
func (d Dialect) isConflict(err error) bool {
	switch d {
	case Postgres:
		var s interface{ SQLState() string }
		if errors.As(err, &s) {
			return s.SQLState() == "23505"
		}
		return strings.Contains(err.Error(), "(SQLSTATE 23505)")
	case MySQL:
		return strings.Contains(err.Error(), "Error 1062")
	case SQLite:
		var c interface{ Code() int }
		if errors.As(err, &c) && (c.Code() == 1555 || c.Code() == 2067) {
			return true
		}
		return strings.Contains(err.Error(), "UNIQUE constraint failed")
	}
	return false
}
