//! Token counting with the model's own tokenizer (tiktoken's BPE tables, compiled into the
//! binary: nothing is downloaded at run time). Used by the server to meter calls whose upstream
//! reports no usage, and by the local upstream to report usage as OpenAI would.

use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

/// OpenAI's chat framing: every message costs 3 tokens besides its role and content, and the
/// reply is primed with 3 more (the OpenAI cookbook's count for current models).
const TOKENS_PER_MESSAGE: usize = 3;
const REPLY_PRIMING: usize = 3;

/// The BPE for a model: its own when known (cl100k for GPT-4/3.5, o200k for GPT-4o and later),
/// o200k for models tiktoken does not know (the encoding of every current OpenAI model).
pub fn bpe(model: &str) -> &'static CoreBPE {
    match get_tokenizer(model) {
        Some(Tokenizer::Cl100kBase) => tiktoken_rs::cl100k_base_singleton(),
        Some(Tokenizer::O200kHarmony) => tiktoken_rs::o200k_harmony_singleton(),
        _ => tiktoken_rs::o200k_base_singleton(),
    }
}

/// Tokens in a piece of generated or prompt text (special-token text counts as plain text).
pub fn count_text(model: &str, text: &str) -> usize {
    bpe(model).encode_ordinary(text).len()
}

/// Prompt tokens of a chat request made of `(role, content)` messages.
pub fn count_chat<'a>(
    model: &str,
    messages: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> usize {
    let bpe = bpe(model);
    messages
        .into_iter()
        .map(|(role, content)| {
            TOKENS_PER_MESSAGE
                + bpe.encode_ordinary(role).len()
                + bpe.encode_ordinary(content).len()
        })
        .sum::<usize>()
        + REPLY_PRIMING
}

/// Load the tables now rather than on the first call (they take a moment to build).
pub fn warm_up() {
    let _ = tiktoken_rs::o200k_base_singleton();
    let _ = tiktoken_rs::cl100k_base_singleton();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_the_models_encoding() {
        // "hello world" is two tokens in both encodings; the chat framing adds 3 + role + 3.
        assert_eq!(count_text("gpt-4o-mini", "hello world"), 2);
        assert_eq!(count_text("gpt-4", "hello world"), 2);
        assert_eq!(
            count_chat("gpt-4o-mini", [("user", "hello world")]),
            3 + 1 + 2 + 3
        );
        // o200k and cl100k differ on some text: the model picks the table.
        let text = "Die Kraftfahrzeug-Haftpflichtversicherung";
        assert_ne!(count_text("gpt-4o", text), count_text("gpt-4", text));
        assert_eq!(
            count_text("some-unknown-model", text),
            count_text("gpt-4o", text)
        );
    }
}
