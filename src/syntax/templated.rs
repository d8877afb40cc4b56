//! Step settings written as a literal or as a template rendered when the step runs:
//! `retries: 30` or `retries: "{{ user_checks }}"`, `delay: 60s` or
//! `delay: "{{ check_interval }}"`. A literal is checked when the playbook loads; a template's
//! variables are checked then too (like every template of a step), and what it renders to is
//! checked when the step runs.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::HumanDuration;
use super::duration::DURATION_HELP;
use crate::diagnostic::ValueError;

/// A setting known when the playbook loads, or a template rendered when the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Templated<T> {
    /// Written out, and checked when the playbook loads.
    Literal(T),
    /// `"{{ user_checks }}"`.
    Template(String),
}

/// A value a [`Templated`] setting can hold: how it is read from YAML and from the text a
/// template renders to.
pub trait Setting: Sized + Copy {
    /// What a rendered value must be, after "which is not".
    const EXPECTED: &'static str;
    /// A whole number written in YAML.
    fn from_number(number: u64) -> Result<Self, ValueError>;
    /// A negative number written in YAML.
    fn from_negative(number: i64) -> Result<Self, ValueError>;
    /// Text written in YAML, or rendered from a template; `None` when it is not a value.
    fn from_text(text: &str) -> Option<Self>;
    /// The complaint about text that [`Setting::from_text`] refused.
    fn not_a_value(text: &str) -> ValueError;
}

impl Setting for u32 {
    const EXPECTED: &'static str = "a whole number of 0 or more";

    fn from_number(number: u64) -> Result<Self, ValueError> {
        u32::try_from(number)
            .map_err(|_| ValueError::new("`{key}` is too big", "for example `{key}: 3`"))
    }

    fn from_negative(_: i64) -> Result<Self, ValueError> {
        Err(ValueError::new(
            "`{key}` cannot be negative",
            "use 0 or more",
        ))
    }

    fn from_text(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }

    fn not_a_value(text: &str) -> ValueError {
        ValueError::new(
            format!("`{{key}}` must be a whole number, not `{text}`"),
            "for example `{key}: 3`",
        )
    }
}

impl Setting for HumanDuration {
    const EXPECTED: &'static str = "a duration such as 30, 90s, 5m or 1h30m";

    fn from_number(seconds: u64) -> Result<Self, ValueError> {
        Ok(HumanDuration(Duration::from_secs(seconds)))
    }

    fn from_negative(_: i64) -> Result<Self, ValueError> {
        Err(ValueError::new("`{key}` cannot be negative", DURATION_HELP))
    }

    fn from_text(text: &str) -> Option<Self> {
        HumanDuration::parse(text).ok()
    }

    fn not_a_value(text: &str) -> ValueError {
        let message = HumanDuration::parse(text)
            .err()
            .unwrap_or_else(|| format!("`{text}` is not a duration"));
        ValueError::new(message, DURATION_HELP)
    }
}

impl<T: Serialize> Serialize for Templated<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Templated::Literal(value) => value.serialize(serializer),
            Templated::Template(text) => serializer.serialize_str(text),
        }
    }
}

impl<'de, T: Setting> Deserialize<'de> for Templated<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SettingVisitor<T>(PhantomData<T>);
        impl<T: Setting> Visitor<'_> for SettingVisitor<T> {
            type Value = Templated<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} or a template", T::EXPECTED)
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Self::Value, E> {
                T::from_number(number)
                    .map(Templated::Literal)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Self::Value, E> {
                match u64::try_from(number) {
                    Ok(number) => self.visit_u64(number),
                    Err(_) => T::from_negative(number)
                        .map(Templated::Literal)
                        .map_err(E::custom),
                }
            }
            fn visit_f64<E: de::Error>(self, number: f64) -> Result<Self::Value, E> {
                Err(E::custom(T::not_a_value(&number.to_string())))
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
                Err(E::custom(T::not_a_value(&value.to_string())))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                if super::is_template(text) {
                    return Ok(Templated::Template(text.to_string()));
                }
                T::from_text(text)
                    .map(Templated::Literal)
                    .ok_or_else(|| E::custom(T::not_a_value(text)))
            }
        }
        deserializer.deserialize_any(SettingVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: Setting>(yaml: &str) -> Result<Templated<T>, String> {
        serde_saphyr::from_str(yaml).map_err(|error| error.to_string())
    }

    #[test]
    fn literals_and_templates_are_read() {
        assert_eq!(read::<u32>("3"), Ok(Templated::Literal(3)));
        assert_eq!(read::<u32>("'3'"), Ok(Templated::Literal(3)));
        assert_eq!(
            read::<u32>("'{{ user_checks }}'"),
            Ok(Templated::Template("{{ user_checks }}".into()))
        );
        assert!(read::<u32>("-1").is_err());
        assert!(read::<u32>("many").is_err());
        assert_eq!(
            read::<HumanDuration>("90s"),
            Ok(Templated::Literal(HumanDuration(Duration::from_secs(90))))
        );
        assert_eq!(
            read::<HumanDuration>("30"),
            Ok(Templated::Literal(HumanDuration(Duration::from_secs(30))))
        );
        assert!(read::<HumanDuration>("soon").is_err());
    }

    #[test]
    fn rendered_text_is_read_as_a_value() {
        assert_eq!(u32::from_text("12"), Some(12));
        assert_eq!(u32::from_text(" 4\n"), Some(4));
        assert_eq!(u32::from_text("-1"), None);
        assert_eq!(u32::from_text("lots"), None);
        assert_eq!(
            HumanDuration::from_text("5m"),
            Some(HumanDuration(Duration::from_secs(300)))
        );
        assert_eq!(HumanDuration::from_text("soon"), None);
    }
}
