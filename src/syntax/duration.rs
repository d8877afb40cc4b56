//! Durations written by people: `30`, `"90s"`, `"5m"`, `"1h30m"`, `"250ms"`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::diagnostic::ValueError;

/// How to write a duration, for `help:` lines.
pub(super) const DURATION_HELP: &str = "write a duration such as 30, 90s, 5m or 1h30m";

/// A duration in a playbook; a bare number is seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `90`, `90s`, `5m`, `1h30m`, `250ms`, `2d`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the duration is empty".into());
        }
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(HumanDuration(Duration::from_secs(seconds)));
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!("`{text}` is not a duration"));
            }
            let number: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("`{text}` is not a duration"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let part = match unit {
                "ms" => Some(Duration::from_millis(number)),
                "s" => Some(Duration::from_secs(number)),
                "m" => number.checked_mul(60).map(Duration::from_secs),
                "h" => number.checked_mul(3600).map(Duration::from_secs),
                "d" => number.checked_mul(86400).map(Duration::from_secs),
                _ => {
                    return Err(format!(
                        "`{text}` is not a duration: unknown unit `{unit}` (units: ms, s, m, h, d)"
                    ));
                }
            };
            total = part
                .and_then(|part| total.checked_add(part))
                .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        }
        Ok(HumanDuration(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if !millis.is_multiple_of(1000) {
            write!(f, "{millis}ms")
        } else {
            write!(f, "{}s", millis / 1000)
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30, 90s, 5m or 1h30m")
            }
            fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Self::Value, E> {
                Ok(HumanDuration(Duration::from_secs(seconds)))
            }
            fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Self::Value, E> {
                u64::try_from(seconds)
                    .map(|s| HumanDuration(Duration::from_secs(s)))
                    .map_err(|_| {
                        E::custom(ValueError::new("`{key}` cannot be negative", DURATION_HELP))
                    })
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                HumanDuration::parse(text)
                    .map_err(|message| E::custom(ValueError::new(message, DURATION_HELP)))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let secs = |t: &str| HumanDuration::parse(t).map(|d| d.0.as_millis());
        assert_eq!(secs("30"), Ok(30_000));
        assert_eq!(secs("90s"), Ok(90_000));
        assert_eq!(secs("1h30m"), Ok(5_400_000));
        assert_eq!(secs("250ms"), Ok(250));
        assert!(secs("soon").is_err());
        assert!(secs("5x").is_err());
    }
}
