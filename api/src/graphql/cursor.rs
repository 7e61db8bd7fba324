//! Opaque cursors: a position in one of the caller's feeds (the history's (`created_at`, `id`),
//! the conversations' (`updated_at`, `id`), a conversation's turn number), signed for the user
//! and the feed it came from, so a forged, another user's or another feed's cursor is refused
//! instead of trusted.

use std::sync::Arc;

use async_graphql::connection::CursorType;
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

/// The HMAC of one feed of one user's, keyed with the secret and fed the feed's name and the
/// user: made once per page and cloned per cursor, so a page pays the key's setup (two of the
/// five SHA-256 blocks of a cursor's MAC) once.
#[derive(Clone)]
struct Signer(Hmac<Sha256>);

impl Signer {
    fn new(secret: &[u8], feed: &str, user_id: &str) -> Signer {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(feed.as_bytes());
        mac.update(user_id.as_bytes());
        mac.update(b":");
        Signer(mac)
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(payload.as_bytes());
        mac
    }

    fn seal(&self, payload: &str) -> String {
        let tag = self.mac(payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(&tag[..TAG_BYTES])
        )
    }

    fn open(&self, cursor: &str) -> Result<String, AppError> {
        let (payload, tag) = cursor.split_once('.').ok_or_else(invalid)?;
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?)
            .map_err(|_| invalid())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        if tag.len() != TAG_BYTES {
            return Err(invalid());
        }
        self.mac(&payload)
            .verify_truncated_left(&tag)
            .map_err(|_| invalid())?;
        Ok(payload)
    }
}

fn invalid() -> AppError {
    AppError::bad_input("invalid cursor: use a cursor from this feed's pageInfo or edges")
}

/// What a cursor names in its feed.
#[derive(Clone, Copy)]
enum Place {
    TimeAndId(DateTime<Utc>, Uuid),
    Turn(i32),
}

impl Place {
    fn payload(self) -> String {
        match self {
            Place::TimeAndId(at, id) => time_and_id(at, id),
            Place::Turn(seq) => seq.to_string(),
        }
    }
}

/// A cursor of a page being answered, signed only if the response shows it: every edge has one,
/// and a client paging by `pageInfo { endCursor }` reads two of a page's twenty (signing all of
/// them was 4 % of the server's CPU for page 1 of the history).
pub struct Cursor {
    signer: Arc<Signer>,
    place: Place,
}

impl CursorType for Cursor {
    type Error = &'static str;

    /// Not how cursors are read here: opening one takes its user's key and feed, which
    /// `decode` and its siblings are given (async-graphql calls this only from
    /// `connection::query`, which the feeds do not use).
    fn decode_cursor(_: &str) -> Result<Self, Self::Error> {
        Err("a cursor is opened with its user's key (cursor::decode)")
    }

    fn encode_cursor(&self) -> String {
        self.signer.seal(&self.place.payload())
    }
}

/// The cursors of one page of one user's feed.
pub struct Cursors(Arc<Signer>);

impl Cursors {
    /// For `user_id`'s history.
    pub fn history(secret: &[u8], user_id: &str) -> Cursors {
        Cursors(Arc::new(Signer::new(secret, HISTORY, user_id)))
    }

    /// For `user_id`'s list of conversations.
    pub fn conversations(secret: &[u8], user_id: &str) -> Cursors {
        Cursors(Arc::new(Signer::new(secret, CONVERSATIONS, user_id)))
    }

    /// For the turns of a conversation of `user_id`'s.
    pub fn turns(secret: &[u8], user_id: &str, conversation: Uuid) -> Cursors {
        Cursors(Arc::new(Signer::new(
            secret,
            TURNS,
            &turn_feed(user_id, conversation),
        )))
    }

    fn at(&self, place: Place) -> Cursor {
        Cursor {
            signer: self.0.clone(),
            place,
        }
    }

    /// The cursor of a log in the history.
    pub fn log(&self, pos: Position) -> Cursor {
        self.at(Place::TimeAndId(pos.created_at, pos.id))
    }

    /// The cursor of a conversation in the list.
    pub fn conversation(&self, at: Activity) -> Cursor {
        self.at(Place::TimeAndId(at.updated_at, at.id))
    }

    /// The cursor of turn `seq`.
    pub fn turn(&self, seq: i32) -> Cursor {
        self.at(Place::Turn(seq))
    }
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

/// The position a cursor names, if it was issued for `user_id`'s history.
pub fn decode(secret: &[u8], user_id: &str, cursor: &str) -> Result<Position, AppError> {
    let (created_at, id) = parse_time_and_id(&Signer::new(secret, HISTORY, user_id).open(cursor)?)?;
    Ok(Position { created_at, id })
}

/// The place a conversations cursor names, if it was issued for `user_id`.
pub fn decode_conversation(
    secret: &[u8],
    user_id: &str,
    cursor: &str,
) -> Result<Activity, AppError> {
    let (updated_at, id) =
        parse_time_and_id(&Signer::new(secret, CONVERSATIONS, user_id).open(cursor)?)?;
    Ok(Activity { updated_at, id })
}

fn turn_feed(user_id: &str, conversation: Uuid) -> String {
    format!("{user_id}:{}", conversation.simple())
}

/// The turn number a cursor names, if it was issued for this conversation of `user_id`'s.
pub fn decode_turn(
    secret: &[u8],
    user_id: &str,
    conversation: Uuid,
    cursor: &str,
) -> Result<i32, AppError> {
    Signer::new(secret, TURNS, &turn_feed(user_id, conversation))
        .open(cursor)?
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

    fn encode(secret: &[u8], user_id: &str, pos: Position) -> String {
        Cursors::history(secret, user_id).log(pos).encode_cursor()
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
        let c = Cursors::conversations(b"secret", "alice")
            .conversation(at)
            .encode_cursor();
        assert_eq!(decode_conversation(b"secret", "alice", &c).unwrap(), at);
        assert!(decode(b"secret", "alice", &c).is_err());
        let (one, two) = (Uuid::now_v7(), Uuid::now_v7());
        let t = Cursors::turns(b"secret", "alice", one)
            .turn(7)
            .encode_cursor();
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

    #[test]
    fn a_page_s_cursors_are_the_cursors_signed_one_by_one() {
        // One signer cloned per cursor gives each the MAC of its own payload: two places of
        // one page do not share a tag, and each opens to its own place.
        let cursors = Cursors::history(b"secret", "alice");
        let (p, q) = (pos(), pos());
        let (cp, cq) = (
            cursors.log(p).encode_cursor(),
            cursors.log(q).encode_cursor(),
        );
        assert_ne!(cp.split_once('.').unwrap().1, cq.split_once('.').unwrap().1);
        assert_eq!(decode(b"secret", "alice", &cp).unwrap(), p);
        assert_eq!(decode(b"secret", "alice", &cq).unwrap(), q);
        assert_eq!(cursors.log(p).encode_cursor(), cp);
        assert!(Cursor::decode_cursor(&cp).is_err());
    }
}
