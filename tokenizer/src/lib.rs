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
    encoding(model).1
}

/// The name of the model's encoding (`cl100k_base`, `o200k_base`, `o200k_harmony`): counts made
/// for one model hold for every model of the same encoding.
pub fn encoding_name(model: &str) -> &'static str {
    encoding(model).0
}

fn encoding(model: &str) -> (&'static str, &'static CoreBPE) {
    match get_tokenizer(model) {
        Some(Tokenizer::Cl100kBase) => ("cl100k_base", tiktoken_rs::cl100k_base_singleton()),
        Some(Tokenizer::O200kHarmony) => ("o200k_harmony", tiktoken_rs::o200k_harmony_singleton()),
        _ => ("o200k_base", tiktoken_rs::o200k_base_singleton()),
    }
}

/// Tokens in a piece of generated or prompt text (special-token text counts as plain text).
pub fn count_text(model: &str, text: &str) -> usize {
    bpe(model).encode_ordinary(text).len()
}

/// What one chat message adds to a request's prompt tokens, given its content's token count:
/// the framing, the role, and the content. `count_chat` is the sum of these plus
/// [`reply_priming`].
pub fn message_tokens(model: &str, role: &str, content_tokens: usize) -> usize {
    TOKENS_PER_MESSAGE + bpe(model).encode_ordinary(role).len() + content_tokens
}

/// The tokens every chat request adds once, priming the reply.
pub fn reply_priming() -> usize {
    REPLY_PRIMING
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
    fn a_chat_is_the_sum_of_its_messages() {
        let messages = [
            ("system", "Be brief."),
            ("user", "hi"),
            ("assistant", "hello there"),
        ];
        for model in ["gpt-4o-mini", "gpt-4"] {
            let parts: usize = messages
                .iter()
                .map(|(r, c)| message_tokens(model, r, count_text(model, c)))
                .sum();
            assert_eq!(parts + reply_priming(), count_chat(model, messages));
        }
        assert_eq!(encoding_name("gpt-4o"), encoding_name("gpt-4o-mini"));
        assert_ne!(encoding_name("gpt-4o"), encoding_name("gpt-4"));
    }

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
