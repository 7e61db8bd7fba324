//! Opaque cursors: a position in one of the caller's feeds (the history's (`created_at`, `id`),
//! the conversations' (`updated_at`, `id`), a conversation's turn number), signed for the user
//! and the feed it came from, so a forged, another user's or another feed's cursor is refused
//! instead of trusted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::AppError;
use crate::service::conversations::Activity;
use crate::service::history::Position;

const TAG_BYTES: usize = 16;

/// Which feed a cursor belongs to (part of what is signed).
const HISTORY: &str = "history-cursor:v1:";
const CONVERSATIONS: &str = "conversation-cursor:v1:";
const TURNS: &str = "turn-cursor:v1:";

fn mac(secret: &[u8], feed: &str, user_id: &str, payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(feed.as_bytes());
    mac.update(user_id.as_bytes());
    mac.update(b":");
    mac.update(payload.as_bytes());
    mac
}

fn invalid() -> AppError {
    AppError::bad_input("invalid cursor: use a cursor from this feed's pageInfo or edges")
}

fn seal(secret: &[u8], feed: &str, user_id: &str, payload: &str) -> String {
    let tag = mac(secret, feed, user_id, payload).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES])
    )
}

fn open(secret: &[u8], feed: &str, user_id: &str, cursor: &str) -> Result<String, AppError> {
    let (payload, tag) = cursor.split_once('.').ok_or_else(invalid)?;
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?)
        .map_err(|_| invalid())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
    if tag.len() != TAG_BYTES {
        return Err(invalid());
    }
    mac(secret, feed, user_id, &payload)
        .verify_truncated_left(&tag)
        .map_err(|_| invalid())?;
    Ok(payload)
}

fn time_and_id(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}:{}", at.timestamp_micros(), id.simple())
}

fn parse_time_and_id(payload: &str) -> Result<(DateTime<Utc>, Uuid), AppError> {
    let (micros, id) = payload.split_once(':').ok_or_else(invalid)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| invalid())?)
        .ok_or_else(invalid)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| invalid())?))
}

/// The cursor of `pos` in `user_id`'s history.
pub fn encode(secret: &[u8], user_id: &str, pos: Position) -> String {
    seal(
        secret,
        HISTORY,
        user_id,
        &time_and_id(pos.created_at, pos.id),
    )
}

/// The position a cursor names, if it was issued for `user_id`'s history.
pub fn decode(secret: &[u8], user_id: &str, cursor: &str) -> Result<Position, AppError> {
    let (created_at, id) = parse_time_and_id(&open(secret, HISTORY, user_id, cursor)?)?;
    Ok(Position { created_at, id })
}

/// The cursor of a conversation in `user_id`'s list of conversations.
pub fn encode_conversation(secret: &[u8], user_id: &str, at: Activity) -> String {
    seal(
        secret,
        CONVERSATIONS,
        user_id,
        &time_and_id(at.updated_at, at.id),
    )
}

/// The place a conversations cursor names, if it was issued for `user_id`.
pub fn decode_conversation(
    secret: &[u8],
    user_id: &str,
    cursor: &str,
) -> Result<Activity, AppError> {
    let (updated_at, id) = parse_time_and_id(&open(secret, CONVERSATIONS, user_id, cursor)?)?;
    Ok(Activity { updated_at, id })
}

fn turn_feed(user_id: &str, conversation: Uuid) -> String {
    format!("{user_id}:{}", conversation.simple())
}

/// The cursor of turn `seq` of a conversation of `user_id`'s.
pub fn encode_turn(secret: &[u8], user_id: &str, conversation: Uuid, seq: i32) -> String {
    seal(
        secret,
        TURNS,
        &turn_feed(user_id, conversation),
        &seq.to_string(),
    )
}

/// The turn number a cursor names, if it was issued for this conversation of `user_id`'s.
pub fn decode_turn(
    secret: &[u8],
    user_id: &str,
    conversation: Uuid,
    cursor: &str,
) -> Result<i32, AppError> {
    open(secret, TURNS, &turn_feed(user_id, conversation), cursor)?
        .parse()
        .map_err(|_| invalid())
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
        // Not a cursor of another feed, either.
        let at = Activity {
            updated_at: p.created_at,
            id: p.id,
        };
        assert!(decode_conversation(b"secret", "alice", &c).is_err());
        let c = encode_conversation(b"secret", "alice", at);
        assert_eq!(decode_conversation(b"secret", "alice", &c).unwrap(), at);
        assert!(decode(b"secret", "alice", &c).is_err());
        let (one, two) = (Uuid::now_v7(), Uuid::now_v7());
        let t = encode_turn(b"secret", "alice", one, 7);
        assert_eq!(decode_turn(b"secret", "alice", one, &t).unwrap(), 7);
        assert!(decode_turn(b"secret", "alice", two, &t).is_err());
        assert!(decode_turn(b"secret", "bob", one, &t).is_err());
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
