//! Listing in SQL: one page of keys by name prefix, tags and cursor, and key counts per
//! backend. The page is cut by `LIMIT` on the `keys` primary key order, so a listing reads
//! about one page of rows, however many keys there are.

use std::collections::BTreeMap;

use rusqlite::Connection;
use rusqlite::types::Value;

use super::rows::{Text, select_keys_sql};
use super::{Rows, Sql};
use crate::store::{KeyPage, KeyQuery, KeyState, Result, StoreError};

/// One page of the keys that match `query`.
pub(super) fn page(rows: &Rows<'_>, query: &KeyQuery) -> Result<KeyPage> {
    // Fixed conditions first. `name >= prefix` lets SQLite start the scan of the primary
    // key at the prefix; the byte-wise comparison then keeps only names that start with it
    // (no LIKE, so '%' and '_' are literal).
    let mut filter = String::from(
        "state <> ?1 AND name >= ?2 AND substr(CAST(name AS BLOB), 1, length(?3)) = ?3 \
         AND name > ?4",
    );
    let mut params = vec![
        Value::Text(KeyState::Creating.text().to_owned()),
        Value::Text(query.prefix.clone()),
        Value::Blob(query.prefix.as_bytes().to_vec()),
        Value::Text(query.after.clone().unwrap_or_default()),
    ];
    for (tag, value) in &query.tags {
        let n = params.len();
        filter.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM key_tags t WHERE t.key_name = keys.name \
             AND t.tag = ?{} AND t.value = ?{})",
            n + 1,
            n + 2
        ));
        params.push(Value::Text(tag.clone()));
        params.push(Value::Text(value.clone()));
    }
    // One more than the page, to know whether another page follows.
    let limit = i64::try_from(query.page_size.saturating_add(1)).unwrap_or(i64::MAX);
    let tail = format!("LIMIT ?{}", params.len() + 1);
    params.push(Value::Integer(limit));
    let mut keys = select_keys_sql(rows, &filter, &tail, rusqlite::params_from_iter(params))?;
    let more = keys.len() > query.page_size;
    keys.truncate(query.page_size);
    Ok(KeyPage { keys, more })
}

/// Keys (not `Creating`) per backend.
pub(super) fn count_by_backend(conn: &Connection) -> Result<BTreeMap<String, u64>> {
    let mut stmt = conn
        .prepare_cached("SELECT backend, COUNT(*) FROM keys WHERE state <> ?1 GROUP BY backend")
        .sql()?;
    let counts = stmt
        .query_map([KeyState::Creating.text()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .sql()?
        .collect::<rusqlite::Result<Vec<_>>>()
        .sql()?;
    counts
        .into_iter()
        .map(|(backend, count)| {
            u64::try_from(count)
                .map(|count| (backend, count))
                .map_err(|_| StoreError::Database(format!("negative count {count}")))
        })
        .collect()
}
