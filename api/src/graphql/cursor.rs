//! Opaque history cursors: the position (`created_at`, `id`) of a log, signed for the user whose
//! feed it came from, so a forged or another user's cursor is refused instead of trusted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::DateTime;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::AppError;
use crate::service::history::Position;

const TAG_BYTES: usize = 16;

fn mac(secret: &[u8], user_id: &str, payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"history-cursor:v1:");
    mac.update(user_id.as_bytes());
    mac.update(b":");
    mac.update(payload.as_bytes());
    mac
}

/// The cursor of `pos` in `user_id`'s feed.
pub fn encode(secret: &[u8], user_id: &str, pos: Position) -> String {
    let payload = format!("{}:{}", pos.created_at.timestamp_micros(), pos.id.simple());
    let tag = mac(secret, user_id, &payload).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES])
    )
}

/// The position a cursor names, if it was issued for `user_id`'s feed.
pub fn decode(secret: &[u8], user_id: &str, cursor: &str) -> Result<Position, AppError> {
    let invalid =
        || AppError::bad_input("invalid cursor: use a cursor from this feed's pageInfo or edges");
    let (payload, tag) = cursor.split_once('.').ok_or_else(invalid)?;
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?)
        .map_err(|_| invalid())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
    if tag.len() != TAG_BYTES {
        return Err(invalid());
    }
    mac(secret, user_id, &payload)
        .verify_truncated_left(&tag)
        .map_err(|_| invalid())?;
    let (micros, id) = payload.split_once(':').ok_or_else(invalid)?;
    let created_at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| invalid())?)
        .ok_or_else(invalid)?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok(Position { created_at, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos() -> Position {
        Position {
            created_at: DateTime::from_timestamp_micros(1_795_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        }
    }

    #[test]
    fn round_trips_for_its_user_only() {
        let p = pos();
        let c = encode(b"secret", "alice", p);
        assert_eq!(decode(b"secret", "alice", &c).unwrap(), p);
        assert_eq!(
            decode(b"secret", "bob", &c).unwrap_err().code(),
            "BAD_USER_INPUT"
        );
        assert!(decode(b"other secret", "alice", &c).is_err());
    }

    #[test]
    fn forgeries_are_refused() {
        let c = encode(b"secret", "alice", pos());
        let (payload, tag) = c.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(format!("1:{}", Uuid::nil().simple()));
        for bad in [
            "",
            "x",
            "x.y",
            &format!("{other}.{tag}"),
            &format!("{payload}."),
            &format!("{payload}.{}", &tag[..4]),
            payload,
        ] {
            assert!(decode(b"secret", "alice", bad).is_err(), "{bad:?}");
        }
    }
}
