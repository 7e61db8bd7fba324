//! What a call sends upstream: the conversation's system prompt, then as many of its earlier
//! turns as fit the model's context window (newest kept, oldest dropped first), then the new
//! prompt, counted with the model's tokenizer so that what is sent is what is metered and
//! reserved against the budget. Pure apart from the cache of turn counts.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::error::{AppError, AppResult};
use crate::llm::{Message, Role};
use crate::service::conversations::ContextTurn;

/// Token counts of finished turns, by (log id, encoding): a final log never changes, so its
/// count is computed once per process instead of at every later turn of its conversation.
/// Bounded: when full it starts over (a miss costs one tokenization of the turn).
#[derive(Default)]
pub struct TurnTokens {
    counts: Mutex<HashMap<TurnKey, (u32, u32)>>,
}

/// A turn's log id and the encoding its counts are in.
type TurnKey = (Uuid, &'static str);

/// Turns whose counts the cache keeps (about 40 bytes each).
const TURN_TOKENS_CAPACITY: usize = 200_000;

impl TurnTokens {
    /// Content tokens of the turn's prompt and completion with `model`'s encoding.
    fn get(&self, model: &str, turn: &ContextTurn, completion: &str) -> (usize, usize) {
        let key = (turn.id, tokenizer::encoding_name(model));
        let lock = || self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(p, c)) = lock().get(&key) {
            return (p as usize, c as usize);
        }
        let p = tokenizer::count_text(model, &turn.prompt);
        let c = tokenizer::count_text(model, completion);
        let mut counts = lock();
        if counts.len() >= TURN_TOKENS_CAPACITY {
            counts.clear();
        }
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        counts.insert(key, (clamp(p), clamp(c)));
        (p, c)
    }
}

/// Builds a call's context: fed the conversation's earlier turns newest first, it keeps each
/// one that still fits, and stops at the first that does not (the context is always the most
/// recent turns, without gaps).
pub struct Context<'a> {
    model: &'a str,
    /// Tokens the prompt may take: the window less the room kept for the completion.
    room: usize,
    /// Prompt tokens so far: the system prompt, the new prompt, the kept turns and the priming.
    used: usize,
    /// Kept turns, newest first: (prompt, completion).
    turns: Vec<(String, String)>,
    full: bool,
    counts: &'a TurnTokens,
    /// What a turn's two messages add besides their contents (framing and roles).
    framing: usize,
    /// The most turns kept (`CONTEXT_MAX_TURNS`).
    max_turns: usize,
}

/// A finished context.
#[derive(Debug)]
pub struct Built {
    pub messages: Vec<Message>,
    /// Prompt tokens of `messages`, with the model's tokenizer.
    pub prompt_tokens: usize,
    /// Earlier turns included.
    pub turns: usize,
}

impl<'a> Context<'a> {
    /// Start with the parts that are always sent: refused (`BAD_USER_INPUT`) if they alone,
    /// with room for `max_tokens`, do not fit the window. At most `max_turns` turns are kept.
    pub fn new(
        model: &'a str,
        window: u32,
        max_tokens: u32,
        max_turns: usize,
        system: Option<&str>,
        prompt: &str,
        counts: &'a TurnTokens,
    ) -> AppResult<Self> {
        let message = |role: Role, text: &str| {
            tokenizer::message_tokens(model, role.as_str(), tokenizer::count_text(model, text))
        };
        let used = tokenizer::reply_priming()
            + system.map_or(0, |s| message(Role::System, s))
            + message(Role::User, prompt);
        let room = (window as usize).saturating_sub(max_tokens as usize);
        if used > room {
            return Err(AppError::bad_input(format!(
                "the prompt{} takes {used} tokens and maxTokens {max_tokens}: more than \
                 {model}'s context window of {window} tokens",
                if system.is_some() {
                    " with the conversation's system prompt"
                } else {
                    ""
                }
            )));
        }
        Ok(Self {
            model,
            room,
            used,
            turns: Vec::new(),
            full: false,
            counts,
            framing: tokenizer::message_tokens(model, Role::User.as_str(), 0)
                + tokenizer::message_tokens(model, Role::Assistant.as_str(), 0),
            max_turns,
        })
    }

    /// Offer the next older turn; false once the context is full (offer no more). A turn that
    /// failed before any output, or is still running, adds nothing and is skipped.
    pub fn offer(&mut self, turn: &ContextTurn) -> bool {
        if self.full {
            return false;
        }
        let Some(completion) = turn.completion.as_deref().filter(|c| !c.is_empty()) else {
            return true;
        };
        let (p, c) = self.counts.get(self.model, turn, completion);
        let cost = self.framing + p + c;
        if self.used + cost > self.room || self.turns.len() >= self.max_turns {
            self.full = true;
            return false;
        }
        self.used += cost;
        self.turns
            .push((turn.prompt.clone(), completion.to_owned()));
        true
    }

    /// The messages to send, oldest first.
    pub fn build(self, system: Option<&str>, prompt: &str) -> Built {
        let mut messages = Vec::with_capacity(2 * self.turns.len() + 2);
        if let Some(s) = system {
            messages.push(Message {
                role: Role::System,
                content: s.to_owned(),
            });
        }
        let turns = self.turns.len();
        for (p, c) in self.turns.into_iter().rev() {
            messages.push(Message {
                role: Role::User,
                content: p,
            });
            messages.push(Message {
                role: Role::Assistant,
                content: c,
            });
        }
        messages.push(Message {
            role: Role::User,
            content: prompt.to_owned(),
        });
        Built {
            messages,
            prompt_tokens: self.used,
            turns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(prompt: &str, completion: Option<&str>) -> ContextTurn {
        ContextTurn {
            seq: 1,
            id: Uuid::now_v7(),
            prompt: prompt.into(),
            completion: completion.map(Into::into),
        }
    }

    fn pairs(built: &Built) -> Vec<(&str, &str)> {
        built
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect()
    }

    #[test]
    fn the_count_is_what_is_sent_and_old_turns_go_first() {
        let counts = TurnTokens::default();
        let m = "gpt-4o-mini";
        let older = [
            turn("three", Some("drei")),
            turn("failed", Some("")),
            turn("two", Some("zwei")),
            turn("one", Some("eins")),
        ];
        // Offered newest first; everything fits a large window: all turns but the empty one,
        // sent oldest first.
        let mut c = Context::new(m, 10_000, 100, 256, Some("Be brief."), "four", &counts).unwrap();
        for t in &older {
            assert!(c.offer(t));
        }
        let built = c.build(Some("Be brief."), "four");
        let sent = pairs(&built);
        assert_eq!(
            sent,
            [
                ("system", "Be brief."),
                ("user", "one"),
                ("assistant", "eins"),
                ("user", "two"),
                ("assistant", "zwei"),
                ("user", "three"),
                ("assistant", "drei"),
                ("user", "four"),
            ]
        );
        assert_eq!(built.turns, 3);
        assert_eq!(built.prompt_tokens, tokenizer::count_chat(m, sent.clone()));

        // A window that holds the fixed part and exactly one turn keeps the newest only.
        let fixed = tokenizer::count_chat(m, [("system", "Be brief."), ("user", "four")]);
        let one = tokenizer::count_chat(m, [("user", "three"), ("assistant", "drei")])
            - tokenizer::reply_priming();
        let window = (fixed + one + 100) as u32;
        let mut c = Context::new(m, window, 100, 256, Some("Be brief."), "four", &counts).unwrap();
        assert!(c.offer(&older[0]));
        assert!(c.offer(&older[1]), "an empty turn is skipped, not a stop");
        assert!(!c.offer(&older[2]));
        assert!(!c.offer(&older[3]), "once full, older turns are not taken");
        let built = c.build(Some("Be brief."), "four");
        assert_eq!(built.turns, 1);
        // However large the window, no more than max_turns turns.
        let mut c = Context::new(m, 10_000, 100, 2, None, "four", &counts).unwrap();
        assert!(c.offer(&older[0]) && c.offer(&older[2]));
        assert!(!c.offer(&older[3]));
        assert_eq!(c.build(None, "four").turns, 2);
        assert_eq!(built.prompt_tokens, window as usize - 100);
        assert_eq!(built.prompt_tokens, tokenizer::count_chat(m, pairs(&built)));
    }

    #[test]
    fn a_prompt_that_cannot_fit_is_refused() {
        let counts = TurnTokens::default();
        let e = Context::new(
            "gpt-4o-mini",
            40,
            30,
            256,
            None,
            &"word ".repeat(20),
            &counts,
        )
        .err()
        .expect("refused");
        assert_eq!(e.code(), "BAD_USER_INPUT");
        assert!(
            e.message().contains("context window of 40"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn counts_follow_the_models_encoding() {
        let counts = TurnTokens::default();
        let t = turn("hello world", Some("a reply"));
        let mut a = Context::new("gpt-4o-mini", 10_000, 10, 256, None, "x", &counts).unwrap();
        a.offer(&t);
        let mut b = Context::new("gpt-4", 10_000, 10, 256, None, "x", &counts).unwrap();
        b.offer(&t);
        let a = a.build(None, "x");
        let b = b.build(None, "x");
        assert_eq!(
            a.prompt_tokens,
            tokenizer::count_chat("gpt-4o-mini", pairs(&a))
        );
        assert_eq!(b.prompt_tokens, tokenizer::count_chat("gpt-4", pairs(&b)));
    }
}
