//! `Int64`: GraphQL's `Int` is 32-bit and JSON numbers above 2^53 lose precision in JavaScript,
//! so 64-bit values (token budgets and totals, micro-cent costs) travel as decimal strings.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int64(pub i64);

/// A 64-bit signed integer, serialized as a string of decimal digits (e.g. "9007199254740993")
/// so JavaScript clients receive it exactly; parse it with `BigInt(value)`. Accepted as input
/// as such a string or as a JSON integer.
#[Scalar(name = "Int64")]
impl ScalarType for Int64 {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => s
                .trim()
                .parse::<i64>()
                .map(Int64)
                .map_err(|_| InputValueError::custom("Int64 must be a decimal integer string")),
            Value::Number(n) => n
                .as_i64()
                .map(Int64)
                .ok_or_else(|| InputValueError::custom("Int64 must be an integer")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_beyond_javascripts_safe_integers() {
        let big = Int64(9_007_199_254_740_993);
        assert_eq!(big.to_value(), Value::String("9007199254740993".into()));
        assert_eq!(
            <Int64 as ScalarType>::parse(Value::String("9007199254740993".into())).unwrap(),
            big
        );
        assert_eq!(
            <Int64 as ScalarType>::parse(Value::Number(42.into())).unwrap(),
            Int64(42)
        );
        assert!(<Int64 as ScalarType>::parse(Value::String("4.2".into())).is_err());
        assert!(<Int64 as ScalarType>::parse(Value::Boolean(true)).is_err());
    }
}
