package sqlstore

// queries holds the statements of one Store, built once by New with the
// table name and the dialect's placeholders.
type queries struct {
	insert, get, update, delete, list, exists string
	markUsed, revoke, revokeOwner, ownerIDs   string
	rotateOld, state                          string
}

func buildQueries(d Dialect, t tableName) queries {
	tb := t.quoted(d)
	q := queries{
		insert: "INSERT INTO " + tb + " (" + columns + ") VALUES (" + placeholders(numColumns) + ")",
		get:    "SELECT " + columns + " FROM " + tb + " WHERE id = ?",
		// Every column but id is replaced; last_used_at only moves
		// forward, and a NULL argument keeps it (the comparison is NULL).
		// It is conditional on the revision read, which it increments; a
		// stored revoked_at is never cleared or changed.
		update: "UPDATE " + tb + " SET prefix = ?, hint = ?, hash = ?, hash_version = ?, name = ?, owner = ?, " +
			"scopes = ?, plan = ?, metadata = ?, created_at = ?, expires_at = ?, " +
			"revoked_at = COALESCE(revoked_at, ?), rotated_from = ?, rotated_to = ?, " +
			"rotated_at = ?, lineage = ?, disabled = ?, limits = ?, revision = revision + 1, " +
			"last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ? THEN ? ELSE last_used_at END " +
			"WHERE id = ? AND revision = ?",
		delete:   "DELETE FROM " + tb + " WHERE id = ?",
		list:     "SELECT " + columns + " FROM " + tb + " WHERE owner = ? AND id > ? ORDER BY id LIMIT ?",
		exists:   "SELECT 1 FROM " + tb + " WHERE id = ?",
		markUsed: "UPDATE " + tb + " SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
		revoke:   "UPDATE " + tb + " SET revoked_at = ?, revision = revision + 1 WHERE id = ? AND revoked_at IS NULL",
		// MariaDB has no UPDATE ... RETURNING: RevokeOwner locks the ids
		// with ownerIDs and updates them in the same transaction.
		revokeOwner: "UPDATE " + tb + " SET revoked_at = ?, revision = revision + 1 WHERE owner = ? AND revoked_at IS NULL RETURNING id",
		ownerIDs:    "SELECT id FROM " + tb + " WHERE owner = ? AND revoked_at IS NULL ORDER BY id FOR UPDATE",
		// The old key keeps a stored expiry earlier than the grace end.
		rotateOld: "UPDATE " + tb + " SET expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at < ? " +
			"THEN expires_at ELSE ? END, rotated_to = ?, rotated_at = ?, revision = revision + 1 " +
			"WHERE id = ? AND revoked_at IS NULL AND rotated_to = ''",
		state: "SELECT revoked_at, rotated_to FROM " + tb + " WHERE id = ?",
	}
	for _, s := range []*string{
		&q.insert, &q.get, &q.update, &q.delete, &q.list, &q.exists,
		&q.markUsed, &q.revoke, &q.revokeOwner, &q.ownerIDs, &q.rotateOld, &q.state,
	} {
		*s = d.rebind(*s)
	}
	return q
}
