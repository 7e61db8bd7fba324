//! What a call may ask for, checked before anything is written or sent upstream. Pure: the
//! profile's default model and the limits are passed in.

use crate::config::CallsConfig;
use crate::error::{AppError, AppResult};
use crate::llm::is_reasoning_model;
use crate::metering::prices::Price;

/// What a caller asks for.
#[derive(Clone, Debug, Default)]
pub struct CallRequest {
    pub prompt: String,
    pub model: Option<String>,
    pub max_tokens: Option<i32>,
    pub temperature: Option<f64>,
    /// Continue this conversation (its earlier turns are the context), by its id as given.
    pub conversation_id: Option<String>,
}

/// A request that passed every check, with its model resolved and priced.
#[derive(Clone, Debug)]
pub struct ValidCall {
    pub prompt: String,
    pub model: String,
    pub price: Price,
    pub max_tokens: u32,
    pub temperature: Option<f64>,
}

/// Check `req` against the limits; `default_model` stands in when it names none.
pub fn validate(req: CallRequest, default_model: &str, cfg: &CallsConfig) -> AppResult<ValidCall> {
    let prompt = req.prompt;
    if prompt.trim().is_empty() {
        return Err(AppError::bad_input("prompt must not be empty"));
    }
    if prompt.contains('\0') {
        return Err(AppError::bad_input("prompt must not contain U+0000"));
    }
    if prompt.chars().count() > cfg.max_prompt_chars {
        return Err(AppError::bad_input(format!(
            "prompt must be at most {} characters",
            cfg.max_prompt_chars
        )));
    }
    let max = cfg.max_completion_tokens;
    let max_tokens = match req.max_tokens {
        None => cfg.default_max_tokens,
        Some(n) => match u32::try_from(n) {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(AppError::bad_input(format!(
                    "maxTokens must be from 1 to {max}"
                )));
            }
        },
    };
    if let Some(t) = req.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(AppError::bad_input("temperature must be from 0 to 2"));
    }
    let model = req
        .model
        .map_or_else(|| default_model.to_owned(), |m| m.trim().to_owned());
    let Some(price) = cfg.prices.get(&model) else {
        return Err(AppError::bad_input(format!(
            "unknown model {:?}: see `models` for the ones this server routes to",
            model.chars().take(100).collect::<String>()
        )));
    };
    if req.temperature.is_some() && is_reasoning_model(&model) {
        return Err(AppError::bad_input(format!(
            "{model} does not take a temperature"
        )));
    }
    Ok(ValidCall {
        prompt,
        model,
        price,
        max_tokens,
        temperature: req.temperature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CallsConfig {
        crate::config::Config::from_vars(Default::default())
            .unwrap()
            .calls
    }

    fn req(prompt: &str) -> CallRequest {
        CallRequest {
            prompt: prompt.into(),
            ..Default::default()
        }
    }

    fn refusal(r: CallRequest) -> String {
        match validate(r, "gpt-4o-mini", &cfg()) {
            Ok(v) => panic!("accepted: {v:?}"),
            Err(e) => {
                assert_eq!(e.code(), "BAD_USER_INPUT");
                e.message()
            }
        }
    }

    #[test]
    fn defaults_fill_in_what_the_request_leaves_out() {
        let v = validate(req("hi"), "gpt-4o-mini", &cfg()).unwrap();
        assert_eq!(
            (v.model.as_str(), v.max_tokens, v.temperature),
            ("gpt-4o-mini", 1024, None)
        );
        let v = validate(
            CallRequest {
                model: Some(" gpt-4o ".into()),
                max_tokens: Some(4096),
                temperature: Some(2.0),
                ..req("hi")
            },
            "gpt-4o-mini",
            &cfg(),
        )
        .unwrap();
        assert_eq!((v.model.as_str(), v.max_tokens), ("gpt-4o", 4096));
    }

    #[test]
    fn out_of_range_input_is_refused_with_what_is_allowed() {
        assert!(refusal(req(" \n")).contains("empty"));
        assert!(refusal(req("a\0b")).contains("U+0000"));
        assert!(refusal(req(&"x".repeat(32_001))).contains("32000"));
        for n in [0, -1, 4097, i32::MIN, i32::MAX] {
            let m = refusal(CallRequest {
                max_tokens: Some(n),
                ..req("hi")
            });
            assert!(m.contains("1 to 4096"), "{n}: {m}");
        }
        for t in [-0.1, 2.01, f64::NAN, f64::INFINITY] {
            refusal(CallRequest {
                temperature: Some(t),
                ..req("hi")
            });
        }
        assert!(
            refusal(CallRequest {
                model: Some("gpt-9-ultra".into()),
                ..req("hi")
            })
            .contains("unknown model")
        );
        assert!(
            refusal(CallRequest {
                model: Some("o3".into()),
                temperature: Some(1.0),
                ..req("hi")
            })
            .contains("temperature")
        );
    }
}
