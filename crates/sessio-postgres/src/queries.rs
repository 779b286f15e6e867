//! The SQL of every operation, qualified with the store's schema once at start-up.

/// Migrations, applied in order; entries are never edited once released, only appended.
/// `{schema}` is replaced with the quoted schema name.
const MIGRATIONS: &[&str] = &[
    // Version 1. `moved` rows are markers left by a cycle (G3): no session, the digest
    // blocked from reuse, expiring like records.
    "CREATE TABLE {schema}.sessio_sessions (
        digest bytea PRIMARY KEY,
        moved boolean NOT NULL DEFAULT false,
        handle bytea,
        user_id text,
        created_at bigint NOT NULL,
        last_seen_at bigint NOT NULL,
        expires_at bigint NOT NULL,
        body jsonb NOT NULL
    );
    CREATE INDEX sessio_sessions_by_user ON {schema}.sessio_sessions (user_id, created_at)
        WHERE user_id IS NOT NULL;
    CREATE INDEX sessio_sessions_by_expiry ON {schema}.sessio_sessions (expires_at);",
    // Version 2: ending a session by its handle alone (the admin CLI).
    "CREATE INDEX sessio_sessions_by_handle ON {schema}.sessio_sessions (handle)
        WHERE handle IS NOT NULL;",
];

pub(crate) const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

const COLUMNS: &str = "handle, user_id, created_at, last_seen_at, expires_at, body::text";

/// Every statement, with the table name filled in.
pub(crate) struct Queries {
    pub(crate) schema: String,
    pub(crate) load: String,
    pub(crate) insert: String,
    pub(crate) apply_full: String,
    pub(crate) apply_data: String,
    pub(crate) apply_touch: String,
    pub(crate) moved: String,
    pub(crate) lock_for_cycle: String,
    pub(crate) mark_moved: String,
    pub(crate) delete_one: String,
    pub(crate) lock_flashes: String,
    pub(crate) clear_flashes: String,
    pub(crate) list_user: String,
    pub(crate) destroy_user_session: String,
    pub(crate) destroy_user_sessions: String,
    pub(crate) evict: String,
    pub(crate) purge: String,
    pub(crate) count: String,
    pub(crate) index_len: String,
    pub(crate) find_handle: String,
    pub(crate) destroy_all: String,
    pub(crate) count_expired: String,
    pub(crate) top_users: String,
}

/// Quotes an identifier for SQL.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl Queries {
    pub(crate) fn new(schema: &str) -> Self {
        let schema = quote(schema);
        let table = format!("{schema}.sessio_sessions");
        Self {
            load: format!(
                "SELECT {COLUMNS} FROM {table} WHERE digest = $1 AND NOT moved AND expires_at > $2"
            ),
            insert: format!(
                "INSERT INTO {table} (digest, moved, handle, user_id, created_at, last_seen_at, expires_at, body)
                 VALUES ($1, false, $2, $3, $4, $5, $6, ($7::text)::jsonb)
                 ON CONFLICT (digest) DO NOTHING"
            ),
            // One statement: the liveness check and the merge are one atomic step. The second
            // column tells a moved marker from a missing record when nothing was updated.
            // Each patch is one UPDATE whose WHERE holds the liveness check, so the check and the
            // write are one atomic step (G2); the cheapest form that covers the patch is used.
            apply_full: format!(
                "UPDATE {table} SET
                    body = CASE WHEN $9 THEN
                                (body - 'idle_ms' - 'abs_ms')
                                || jsonb_strip_nulls(jsonb_build_object('idle_ms', $10::bigint, 'abs_ms', $11::bigint))
                            ELSE body END
                        || jsonb_build_object(
                            'data', CASE WHEN $3 THEN ($4::text)::jsonb
                                    ELSE ((body -> 'data') - $5::text[]) || ($4::text)::jsonb END)
                        || CASE WHEN $6::text IS NULL THEN '{{}}'::jsonb
                                ELSE jsonb_build_object('flashes',
                                    COALESCE(body -> 'flashes', '[]'::jsonb) || ($6::text)::jsonb) END,
                    last_seen_at = COALESCE($7, last_seen_at),
                    expires_at = COALESCE($8, expires_at)
                WHERE digest = $1 AND NOT moved AND expires_at > $2"
            ),
            apply_data: format!(
                "UPDATE {table} SET
                    body = jsonb_set(body, '{{data}}', ((body -> 'data') - $3::text[]) || ($4::text)::jsonb),
                    last_seen_at = COALESCE($5, last_seen_at),
                    expires_at = COALESCE($6, expires_at)
                WHERE digest = $1 AND NOT moved AND expires_at > $2"
            ),
            apply_touch: format!(
                "UPDATE {table} SET last_seen_at = $3, expires_at = $4
                WHERE digest = $1 AND NOT moved AND expires_at > $2"
            ),
            moved: format!(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE digest = $1 AND moved AND expires_at > $2)"
            ),
            lock_for_cycle: format!(
                "SELECT moved, {COLUMNS} FROM {table} WHERE digest = $1 FOR UPDATE"
            ),
            mark_moved: format!(
                "UPDATE {table} SET moved = true, handle = NULL, user_id = NULL, expires_at = $2, body = '{{}}'
                 WHERE digest = $1"
            ),
            delete_one: format!(
                "DELETE FROM {table} WHERE digest = $1 AND NOT moved RETURNING expires_at"
            ),
            lock_flashes: format!(
                "SELECT COALESCE(body -> 'flashes', '[]'::jsonb)::text FROM {table}
                 WHERE digest = $1 AND NOT moved AND expires_at > $2 FOR UPDATE"
            ),
            clear_flashes: format!("UPDATE {table} SET body = body - 'flashes' WHERE digest = $1"),
            list_user: format!(
                "SELECT {COLUMNS} FROM {table}
                 WHERE user_id = $1 AND NOT moved AND expires_at > $2
                 ORDER BY created_at, handle"
            ),
            destroy_user_session: format!(
                "DELETE FROM {table} WHERE user_id = $1 AND handle = $2 AND NOT moved RETURNING expires_at"
            ),
            destroy_user_sessions: format!(
                "DELETE FROM {table}
                 WHERE user_id = $1 AND NOT moved AND ($2::bytea IS NULL OR handle <> $2)
                 RETURNING expires_at"
            ),
            evict: format!(
                "DELETE FROM {table} WHERE digest IN (
                    SELECT digest FROM {table}
                    WHERE user_id = $1 AND NOT moved AND expires_at > $2
                    ORDER BY (handle = $3) DESC, created_at DESC
                    OFFSET $4)"
            ),
            purge: format!(
                "DELETE FROM {table} WHERE digest IN (
                    SELECT digest FROM {table} WHERE expires_at <= $1 LIMIT $2)"
            ),
            count: format!("SELECT count(*) FROM {table} WHERE NOT moved AND expires_at > $1"),
            index_len: format!("SELECT count(*) FROM {table} WHERE user_id = $1 AND NOT moved"),
            find_handle: format!(
                "SELECT user_id FROM {table} WHERE handle = $1 AND NOT moved AND expires_at > $2"
            ),
            destroy_all: format!("DELETE FROM {table} WHERE NOT moved RETURNING expires_at"),
            count_expired: format!("SELECT count(*) FROM {table} WHERE expires_at <= $1"),
            top_users: format!(
                "SELECT user_id, count(*) FROM {table}
                 WHERE user_id IS NOT NULL AND NOT moved AND expires_at > $1
                 GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT $2"
            ),
            schema,
        }
    }

    /// The migration statements still to run from `current`.
    pub(crate) fn migrations_from(&self, current: i32) -> Vec<String> {
        MIGRATIONS
            .iter()
            .skip(usize::try_from(current).unwrap_or(0))
            .map(|migration| migration.replace("{schema}", &self.schema))
            .collect()
    }
}
