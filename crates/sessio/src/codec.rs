//! The versioned record format for stores that keep a record as columns plus one text blob
//! (SQLite, PostgreSQL).
//!
//! Columns a store must query or index (digest, handle, user, times) stay columns; the rest
//! (data, flash messages, expiry overrides, user agent, IP) is one compact JSON object with a
//! format version `v`, so that a later sessio can read records written by this one.
//!
//! ```
//! use sessio::codec::{self, RecordColumns};
//! # use sessio::{Data, ExpiryOverrides, Record, SessionHandle, Timestamp};
//! # let record = Record {
//! #     handle: SessionHandle::generate().unwrap(), created_at: Timestamp::from_millis(1),
//! #     last_seen_at: Timestamp::from_millis(1), expires_at: Timestamp::from_millis(2),
//! #     expiry: ExpiryOverrides::default(), user: None, data: Data::empty(), flashes: vec![],
//! # };
//! let body = codec::encode_body(&record);
//! let columns = RecordColumns::of(&record);
//! let back = codec::decode_record(columns, &body).unwrap();
//! assert_eq!(back, record);
//! ```

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::id::SessionHandle;
use crate::record::{Data, ExpiryOverrides, Flash, Record, UserBinding};
use crate::store::StoreError;
use crate::time::Timestamp;

/// The format version [`encode_body`] writes.
pub const BODY_FORMAT_VERSION: u32 = 1;

/// The columns of a record, as a store reads them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordColumns {
    /// The public handle.
    pub handle: SessionHandle,
    /// The bound user, if any.
    pub user_id: Option<String>,
    /// Creation (or login) time.
    pub created_at: Timestamp,
    /// Last use.
    pub last_seen_at: Timestamp,
    /// Deadline.
    pub expires_at: Timestamp,
}

impl RecordColumns {
    /// The columns of `record`.
    pub fn of(record: &Record) -> Self {
        Self {
            handle: record.handle,
            user_id: record.user_id().map(str::to_owned),
            created_at: record.created_at,
            last_seen_at: record.last_seen_at,
            expires_at: record.expires_at,
        }
    }
}

#[derive(Serialize)]
struct BodyOut<'a> {
    v: u32,
    data: &'a RawValue,
    #[serde(skip_serializing_if = "<[Flash]>::is_empty")]
    flashes: &'a [Flash],
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abs_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ua: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
}

#[derive(Deserialize)]
struct Version {
    v: u32,
}

#[derive(Deserialize)]
struct BodyV1<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    flashes: Vec<Flash>,
    idle_ms: Option<u64>,
    abs_ms: Option<u64>,
    ua: Option<String>,
    ip: Option<IpAddr>,
}

fn millis(duration: Option<Duration>) -> Option<u64> {
    duration.map(|duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// The JSON body of `record`: everything but the columns.
pub fn encode_body(record: &Record) -> String {
    let empty = Data::empty();
    let data = serde_json::from_str::<&RawValue>(record.data.as_json())
        .or_else(|_| serde_json::from_str::<&RawValue>(empty.as_json()));
    let user = record.user.as_ref();
    let body = data.map(|data| BodyOut {
        v: BODY_FORMAT_VERSION,
        data,
        flashes: &record.flashes,
        idle_ms: millis(record.expiry.idle_timeout),
        abs_ms: millis(record.expiry.absolute_lifetime),
        ua: user.and_then(|user| user.user_agent.as_deref()),
        ip: user.and_then(|user| user.ip),
    });
    // Serializing borrowed, already-valid JSON and plain fields cannot fail.
    body.and_then(|body| serde_json::to_string(&body))
        .unwrap_or_else(|_| format!(r#"{{"v":{BODY_FORMAT_VERSION},"data":{{}}}}"#))
}

/// Rebuilds a record from its columns and body.
///
/// # Errors
/// [`StoreError::Corrupt`] if the body is not valid JSON, or was written in a format version
/// this sessio does not know (a newer sessio wrote it: upgrade).
pub fn decode_record(columns: RecordColumns, body: &str) -> Result<Record, StoreError> {
    let corrupt = |error: serde_json::Error| StoreError::Corrupt(format!("record body: {error}"));
    let Version { v } = serde_json::from_str(body).map_err(corrupt)?;
    if v != 1 {
        return Err(StoreError::Corrupt(format!(
            "record format version {v} is newer than this sessio understands (it reads up to {BODY_FORMAT_VERSION}); upgrade sessio"
        )));
    }
    let body: BodyV1<'_> = serde_json::from_str(body).map_err(corrupt)?;
    let data = Data::from_json(body.data.get()).map_err(corrupt)?;
    Ok(Record {
        handle: columns.handle,
        created_at: columns.created_at,
        last_seen_at: columns.last_seen_at,
        expires_at: columns.expires_at,
        expiry: ExpiryOverrides {
            idle_timeout: body.idle_ms.map(Duration::from_millis),
            absolute_lifetime: body.abs_ms.map(Duration::from_millis),
        },
        user: columns.user_id.map(|user_id| UserBinding {
            user_id,
            user_agent: body.ua,
            ip: body.ip,
        }),
        data,
        flashes: body.flashes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FlashLevel;

    #[test]
    fn every_field_round_trips() {
        let record = Record {
            handle: SessionHandle::generate().unwrap(),
            created_at: Timestamp::from_millis(10),
            last_seen_at: Timestamp::from_millis(20),
            expires_at: Timestamp::from_millis(30),
            expiry: ExpiryOverrides {
                idle_timeout: Some(Duration::from_secs(5)),
                absolute_lifetime: None,
            },
            user: Some(UserBinding {
                user_id: "zoë".into(),
                user_agent: Some("agent \"quoted\"".into()),
                ip: Some("2001:db8::1".parse().unwrap()),
            }),
            data: Data::from_json(r#"{"a":[1,2.5e300,"ü"],"b":null}"#).unwrap(),
            flashes: vec![Flash {
                level: FlashLevel::Warning,
                message: "careful".into(),
            }],
        };
        let body = encode_body(&record);
        assert!(body.starts_with(r#"{"v":1,"#));
        assert_eq!(
            decode_record(RecordColumns::of(&record), &body).unwrap(),
            record
        );
    }

    #[test]
    fn unknown_versions_and_damage_are_corrupt() {
        let columns = RecordColumns {
            handle: SessionHandle::generate().unwrap(),
            user_id: None,
            created_at: Timestamp::EPOCH,
            last_seen_at: Timestamp::EPOCH,
            expires_at: Timestamp::EPOCH,
        };
        for body in [
            r#"{"v":2,"data":{}}"#,
            r#"{"data":{}}"#,
            "not json",
            r#"{"v":1,"data":[]}"#,
        ] {
            assert!(
                matches!(
                    decode_record(columns.clone(), body),
                    Err(StoreError::Corrupt(_))
                ),
                "{body}"
            );
        }
    }
}
