//! What each model costs, in integer micro-cents (1 USD = 10^8 micro-cents) per million tokens.
//!
//! Rounding rule (the only one): a call's cost is
//! `ceil((prompt_tokens × input_price + completion_tokens × output_price) / 1_000_000)` micro-cents,
//! computed once, in 128-bit integer arithmetic. Rounding up means a call is never billed less
//! than it cost, and by less than one micro-cent (10^-8 USD) more.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Micro-cents per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Price {
    /// Per million prompt (input) tokens.
    pub input: i64,
    /// Per million completion (output) tokens.
    pub output: i64,
}

impl Price {
    /// Micro-cents for a call, by the rounding rule above.
    pub fn cost(&self, prompt_tokens: i64, completion_tokens: i64) -> i64 {
        let total = i128::from(prompt_tokens) * i128::from(self.input)
            + i128::from(completion_tokens) * i128::from(self.output);
        let cost = (total + 999_999).div_euclid(1_000_000);
        i64::try_from(cost).unwrap_or(i64::MAX)
    }
}

/// A price in units of 10^-4 USD (1/100 of a cent) → micro-cents (10^-8 USD).
const fn microcents_from_usd_e4(usd_e4: i64) -> i64 {
    usd_e4 * 10_000
}

/// A model's context window (prompt and completion tokens together) when the table does not
/// say: the window of most current chat models. Set it with `MODEL_PRICES` for any model whose
/// window is smaller (a local model served with a short context, say).
pub const DEFAULT_CONTEXT_WINDOW: u32 = 128_000;

/// The models this server routes to, their prices and their context windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceTable {
    models: BTreeMap<String, Price>,
    windows: BTreeMap<String, u32>,
}

/// One model's entry in `MODEL_PRICES`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Override {
    input: i64,
    output: i64,
    #[serde(default)]
    context_window: Option<u32>,
}

impl PriceTable {
    /// OpenAI's list prices per million tokens for common chat models (standard tier).
    /// Override or extend them with `MODEL_PRICES`.
    pub fn defaults() -> Self {
        let table: [(&str, i64, i64, u32); 10] = [
            // model, input, output in 10^-4 USD per million tokens, context window (OpenAI's
            // model pages)
            ("gpt-4o-mini", 1_500, 6_000, 128_000),
            ("gpt-4o", 25_000, 100_000, 128_000),
            ("gpt-4.1", 20_000, 80_000, 1_047_576),
            ("gpt-4.1-mini", 4_000, 16_000, 1_047_576),
            ("gpt-4.1-nano", 1_000, 4_000, 1_047_576),
            ("o4-mini", 11_000, 44_000, 200_000),
            ("o3", 20_000, 80_000, 200_000),
            ("o3-mini", 11_000, 44_000, 200_000),
            ("gpt-4-turbo", 100_000, 300_000, 128_000),
            ("gpt-3.5-turbo", 5_000, 15_000, 16_385),
        ];
        Self {
            models: table
                .iter()
                .map(|&(m, i, o, _)| {
                    (
                        m.to_owned(),
                        Price {
                            input: microcents_from_usd_e4(i),
                            output: microcents_from_usd_e4(o),
                        },
                    )
                })
                .collect(),
            windows: table
                .iter()
                .map(|&(m, _, _, w)| (m.to_owned(), w))
                .collect(),
        }
    }

    /// Apply overrides given as JSON: `{"model": {"input": N, "output": N, "context_window": N},
    /// ...}`, prices in micro-cents per million tokens, the window in tokens (optional: a model
    /// the table knows keeps its window, a new one gets [`DEFAULT_CONTEXT_WINDOW`]); `null`
    /// removes a model.
    pub fn with_overrides(mut self, json: &str) -> Result<Self, String> {
        let overrides: BTreeMap<String, Option<Override>> =
            serde_json::from_str(json).map_err(|e| {
                format!(
                    "is not a JSON object of {{\"model\": {{\"input\": N, \"output\": N, \"context_window\": N}}}}: {e}"
                )
            })?;
        for (model, price) in overrides {
            if model.trim().is_empty() {
                return Err("has an empty model name".into());
            }
            match price {
                Some(p) if p.input < 0 || p.output < 0 => {
                    return Err(format!("has a negative price for {model}"));
                }
                Some(Override {
                    context_window: Some(w),
                    ..
                }) if w < 16 => {
                    return Err(format!("has a context window under 16 tokens for {model}"));
                }
                Some(p) => {
                    if let Some(w) = p.context_window {
                        self.windows.insert(model.clone(), w);
                    }
                    self.models.insert(
                        model,
                        Price {
                            input: p.input,
                            output: p.output,
                        },
                    );
                }
                None => {
                    self.models.remove(&model);
                    self.windows.remove(&model);
                }
            }
        }
        if self.models.is_empty() {
            return Err("leaves no model to route to".into());
        }
        Ok(self)
    }

    pub fn get(&self, model: &str) -> Option<Price> {
        self.models.get(model).copied()
    }

    /// The model's context window in tokens (prompt and completion together).
    pub fn context_window(&self, model: &str) -> u32 {
        self.windows
            .get(model)
            .copied()
            .unwrap_or(DEFAULT_CONTEXT_WINDOW)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Price)> {
        self.models.iter().map(|(m, p)| (m.as_str(), *p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_prices_in_micro_cents() {
        let t = PriceTable::defaults();
        // $0.15 and $0.60 per million = 15,000,000 and 60,000,000 micro-cents per million.
        assert_eq!(
            t.get("gpt-4o-mini"),
            Some(Price {
                input: 15_000_000,
                output: 60_000_000
            })
        );
        assert_eq!(
            t.get("gpt-4o"),
            Some(Price {
                input: 250_000_000,
                output: 1_000_000_000
            })
        );
        assert_eq!(t.get("unknown"), None);
    }

    #[test]
    fn cost_is_exact_when_it_can_be_and_rounds_up_otherwise() {
        let mini = Price {
            input: 15_000_000,
            output: 60_000_000,
        };
        // 1,000 prompt tokens at 15 µ¢ each + 500 completion tokens at 60 µ¢ each.
        assert_eq!(mini.cost(1_000, 500), 15_000 + 30_000);
        assert_eq!(mini.cost(0, 0), 0);
        // 1 token at 0.333333 µ¢ rounds up to 1 µ¢; exactly 2 µ¢ stays 2.
        let odd = Price {
            input: 333_333,
            output: 2_000_000,
        };
        assert_eq!(odd.cost(1, 0), 1);
        assert_eq!(odd.cost(0, 1), 2);
        assert_eq!(odd.cost(3, 0), 1); // 999,999 / 10^6 → 1
        assert_eq!(odd.cost(4, 0), 2); // 1,333,332 / 10^6 → 2
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let p = Price {
            input: i64::MAX,
            output: i64::MAX,
        };
        assert_eq!(p.cost(i64::from(i32::MAX), i64::from(i32::MAX)), i64::MAX);
        let gpt4o = PriceTable::defaults().get("gpt-4o").unwrap();
        assert_eq!(gpt4o.cost(2_000_000_000, 0), 500_000_000_000);
    }

    #[test]
    fn overrides_add_replace_and_remove() {
        let t = PriceTable::defaults()
            .with_overrides(r#"{"my-llama": {"input": 0, "output": 0}, "gpt-4o": {"input": 1, "output": 2}, "o3": null}"#)
            .unwrap();
        assert_eq!(
            t.get("my-llama"),
            Some(Price {
                input: 0,
                output: 0
            })
        );
        assert_eq!(
            t.get("gpt-4o"),
            Some(Price {
                input: 1,
                output: 2
            })
        );
        assert_eq!(t.get("o3"), None);
        // Windows: a listed model keeps its own, a new one gets the default unless it says.
        assert_eq!(t.context_window("gpt-4o"), 128_000);
        assert_eq!(t.context_window("my-llama"), DEFAULT_CONTEXT_WINDOW);
        let t = PriceTable::defaults()
            .with_overrides(r#"{"my-llama": {"input": 0, "output": 0, "context_window": 8192}, "gpt-3.5-turbo": {"input": 1, "output": 1}}"#)
            .unwrap();
        assert_eq!(t.context_window("my-llama"), 8192);
        assert_eq!(t.context_window("gpt-3.5-turbo"), 16_385);
        assert!(
            PriceTable::defaults()
                .with_overrides(r#"{"m": {"input": 0, "output": 0, "context_window": 0}}"#)
                .is_err()
        );
        assert!(
            PriceTable::defaults()
                .with_overrides(r#"{"m": {"input": 0, "output": 0, "context": 9}}"#)
                .is_err()
        );
        assert!(PriceTable::defaults().with_overrides("[1]").is_err());
        assert!(
            PriceTable::defaults()
                .with_overrides(r#"{"m": {"input": -1, "output": 0}}"#)
                .is_err()
        );
    }
}
